"""Web console sessions by the digest of their id (the id itself is only in the cookie)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete

from metalform.store.core import StoreCore, rowcount
from metalform.store.tables import ConsoleSessionRow


@dataclass(frozen=True)
class SessionRecord:
    digest: str
    principal: str
    role: str
    csrf: str
    expires_at: float
    """Unix seconds: every replica compares it with its own clock."""


class SessionStore(StoreCore):
    """Sign-ins of the web console, shared by the server's replicas."""

    def save_session(self, record: SessionRecord, *, now: float) -> None:
        """Keep a new session, and forget every one that has expired."""
        with self._write() as session:
            session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= now))
            session.add(
                ConsoleSessionRow(
                    digest=record.digest,
                    principal=record.principal,
                    role=record.role,
                    csrf=record.csrf,
                    expires_at=record.expires_at,
                    created_at=self._now(),
                )
            )

    def load_session(self, digest: str) -> SessionRecord | None:
        with self._read() as session:
            row = session.get(ConsoleSessionRow, digest)
            if row is None:
                return None
            return SessionRecord(row.digest, row.principal, row.role, row.csrf, row.expires_at)

    def delete_session(self, digest: str) -> bool:
        """Forget a session (sign-out); True when it was there."""
        with self._write() as session:
            stmt = delete(ConsoleSessionRow).where(ConsoleSessionRow.digest == digest)
            return rowcount(session, stmt) == 1
