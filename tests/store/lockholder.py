"""A child process for the lock tests: takes a lock, reports, holds it until told (or killed).

Started with multiprocessing's spawn method, so it shares nothing with the test process but
the database.
"""

from __future__ import annotations

from typing import Any

from metalform.store import Store


def hold(url: str, repository: str, lease: float, report: Any, release: Any) -> None:
    """Try the apply lock of `repository`, put whether it was acquired on the `report` queue
    and, when it was, keep it until anything arrives on the `release` queue."""
    with (
        Store.open(url, migrate_to_head=False, lock_lease_seconds=lease) as store,
        store.apply_lock(repository) as acquired,
    ):
        report.put(bool(acquired))
        if acquired:
            release.get(timeout=60)
