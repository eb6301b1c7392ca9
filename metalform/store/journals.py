"""Providers' journals in the state store (`reconciler.provider.Journal`), for the server.

Written to the store at once, so every replica reads what any of them recorded. Read as a
whole journal at a time and kept for `CACHE_SECONDS`: a plan looks up one entry per BMC
account and must not send one query for each; a record made by another replica within that
time is seen a little later (at worst, Metalform sets again a password it already set).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from metalform.store.core import StoreCore
from metalform.store.tables import JournalRow
from reconciler.provider import Journal

log = logging.getLogger("metalform.store")
CACHE_SECONDS = 5.0


class JournalStore(StoreCore):
    """The rows behind the journals."""

    def journal_entries(self, journal: str) -> dict[str, dict[str, Any]]:
        """Every entry of `journal`, by key."""
        with self._read() as session:
            rows = session.execute(
                select(JournalRow.key, JournalRow.entry).where(JournalRow.journal == journal)
            )
            return {key: dict(entry) for key, entry in rows}

    def record_journal(self, journal: str, key: str, entry: dict[str, Any]) -> None:
        """Keep `entry` as the newest of `key` in `journal`."""
        values = {
            "journal": journal,
            "key": key,
            "entry": entry,
            "recorded_at": float(entry.get("at", time.time())),
        }
        with self._write() as session:
            session.execute(
                self._insert(JournalRow, values).on_conflict_do_update(
                    index_elements=["journal", "key"],
                    set_={"entry": entry, "recorded_at": values["recorded_at"]},
                )
            )


class StoreJournal:
    """One journal in the store, read whole at most every `CACHE_SECONDS`."""

    def __init__(
        self,
        store: JournalStore,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._read_at: float | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= CACHE_SECONDS:
                try:
                    self._entries = self._store.journal_entries(self._name)
                except Exception as exc:  # the store may be down: what we knew still holds
                    log.warning("cannot read the journal %s: %s", self._name, exc)
                self._read_at = now
            return self._entries.get(key)

    def record(self, key: str, **entry: Any) -> None:
        line = {"at": time.time(), **entry}
        with self._lock:
            self._entries[key] = line
        try:
            self._store.record_journal(self._name, key, line)
        except Exception as exc:  # the action goes on; only remembering it is lost
            log.warning("cannot record in the journal %s: %s", self._name, exc)


def store_journals(store: JournalStore) -> Callable[[str], Journal]:
    """`Settings.journals` for a server: each journal in `store`."""
    return lambda name: StoreJournal(store, name)
