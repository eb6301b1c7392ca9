"""A child process for the lock tests: takes a lock, reports, holds it until told (or killed).

Started with multiprocessing's spawn method, so it shares nothing with the test process but
the database.
"""

from __future__ import annotations

from typing import Any

from metalform.store import Store
from reconciler.model.plan import ActionStatus


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


def run_work(url: str, repository: str, report: Any, release: Any) -> None:
    """Like a server process: hold an instance lock, run a plan and an apply (holding the
    repository's apply lock) and report their ids; keep all of it until told (or killed).
    The lease is long: only the holder's death may free these locks quickly."""
    from metalform.store import locks, recovery
    from tests.store.test_store import make_plan

    with Store.open(url, migrate_to_head=False, lock_lease_seconds=120) as store:
        owner = locks.new_owner()
        instance = store.try_lock(recovery.instance_lock_name(owner), owner=owner)
        applying = store.try_apply_lock(repository)
        assert instance is not None and applying is not None
        done = store.create_plan(repository, owner=owner)
        store.start_plan(done.id)
        store.finish_plan(done.id, make_plan())
        running_plan = store.create_plan(repository, owner=owner)
        store.start_plan(running_plan.id)
        applied = store.create_apply(done.id, owner=owner)
        store.start_apply(applied.id)
        store.record_action(applied.id, 1, ActionStatus.SUCCEEDED)
        store.record_action(applied.id, 2, ActionStatus.RUNNING)
        report.put((running_plan.id, applied.id))
        release.get(timeout=60)
