"""The `Store` front: one object for the server and the CLI, made of one part per record type.

| records | module |
|---|---|
| sessions, clock, shared helpers (get-or-404, status transition) | `core.py` |
| plans | `plans.py` |
| applies and their actions | `applies.py` |
| events | `events.py` |
| webhook deliveries | `deliveries.py` |
| resource status, repository summaries | `resource_status.py` |
| pull request comments | `comments.py` |
| rotations of BMC login secrets (audit trail) | `rotations.py` |
| web console sessions | `console_sessions.py` |
| locks (here; the mechanisms in `locks.py`) | `store.py` |

One `Store` per process, shared by its threads. Every method is one short transaction; the
records it returns are detached values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from metalform.store import locks
from metalform.store.applies import ApplyStore
from metalform.store.comments import CommentStore
from metalform.store.console_sessions import SessionStore
from metalform.store.core import DEFAULT_PAGE_SIZE, clamp_limit
from metalform.store.database import create_store_engine
from metalform.store.deliveries import DeliveryStore
from metalform.store.events import EventStore
from metalform.store.journals import JournalStore
from metalform.store.plans import PlanStore
from metalform.store.records import ApplyRecord, Page, PlanRecord, RotationRecord
from metalform.store.rotations import RotationStore

HistoryItem = PlanRecord | ApplyRecord | RotationRecord


class Store(
    PlanStore,
    ApplyStore,
    EventStore,
    DeliveryStore,
    CommentStore,
    RotationStore,
    SessionStore,
    JournalStore,
):
    """Persistence for the server and the CLI, on SQLite or PostgreSQL.

    Open with `Store.open(url)`; close with `close()` or a `with` block.
    """

    def list_history(
        self,
        *,
        repository: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        before: str | None = None,
    ) -> Page[HistoryItem]:
        """Plans, applies and rotations together, newest first (their ids sort by creation
        time)."""
        pages: list[Page[PlanRecord] | Page[ApplyRecord] | Page[RotationRecord]] = [
            self.list_plans(repository=repository, limit=limit, before=before),
            self.list_applies(repository=repository, limit=limit, before=before),
            self.list_rotations(repository=repository, limit=limit, before=before),
        ]
        merged: list[HistoryItem] = [item for p in pages for item in p.items]
        merged.sort(key=lambda record: record.id, reverse=True)
        items = merged[: clamp_limit(limit)]
        more = len(merged) > len(items) or any(p.next_before is not None for p in pages)
        return Page(items, items[-1].id if more and items else None)

    # -- locks -----------------------------------------------------------------------------

    def try_lock(self, name: str, *, owner: str | None = None) -> locks.Lock | None:
        """Take the named lock for this process, or None while another holder has it.

        The lock holds across processes and hosts sharing the database until `release()`;
        a holder that dies frees it (PostgreSQL: with its connection; SQLite: at once when
        it was a process of this host, else after the lease). Not re-entrant: a second
        `try_lock` of a held name returns None. `owner` (default: a new one) must come from
        `locks.new_owner()`.
        """
        owner = owner or locks.new_owner()
        if self.dialect == "postgresql":
            with self._lock_engine_guard:
                if self._lock_engine is None:
                    # one connection per held lock, outside the pool: closing it must really
                    # disconnect, and a long apply must not keep a pooled connection from others
                    self._lock_engine = create_store_engine(self.url, pool=False)
                engine = self._lock_engine
            return locks.try_advisory_lock(engine, name, owner, self._lock_lease / 3)
        return locks.try_lease_lock(self._engine, name, owner, self._lock_lease)

    @contextmanager
    def lock(self, name: str, *, wait_seconds: float = 0.0) -> Iterator[locks.Lock | None]:
        """`with store.lock(name) as held:` held is the lock (truthy) or None (not acquired);
        waits up to `wait_seconds` for it. Released when the block ends."""
        held = locks.wait_for(lambda: self.try_lock(name), wait_seconds)
        try:
            yield held
        finally:
            if held is not None:
                held.release()

    def try_apply_lock(self, repository: str) -> locks.Lock | None:
        """Take the apply lock of `repository` (to hand it to a worker thread), or None."""
        return self.try_lock(apply_lock_name(repository))

    @contextmanager
    def apply_lock(
        self, repository: str, *, wait_seconds: float = 0.0
    ) -> Iterator[locks.Lock | None]:
        """One apply at a time per repository, across threads, processes and replicas:
        `with store.apply_lock(repo) as acquired: if not acquired: ... 409`."""
        with self.lock(apply_lock_name(repository), wait_seconds=wait_seconds) as held:
            yield held


def apply_lock_name(repository: str) -> str:
    """The lock name guarding applies of `repository`."""
    return f"apply:{repository}"
