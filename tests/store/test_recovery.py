"""Crash recovery in the store: what a dead process left open is interrupted at once; what a
live one runs (another replica) is never touched."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from metalform.store import EventType, RunStatus, Store, locks, recovery
from reconciler.model.plan import ActionStatus
from tests.store import lockholder
from tests.store.test_store import planned

pytestmark = pytest.mark.timeout(120)

REPO = "git.example/infra.git#main:."
SPAWN = multiprocessing.get_context("spawn")


@contextmanager
def worker(url: str) -> Iterator[tuple[Any, Any, tuple[str, str]]]:
    """A child process with a running plan and a running apply; (process, release, ids)."""
    report, release = SPAWN.Queue(), SPAWN.Queue()
    process = SPAWN.Process(
        target=lockholder.run_work, args=(url, REPO, report, release), daemon=True
    )
    process.start()
    try:
        yield process, release, report.get(timeout=60)
    finally:
        if process.is_alive():
            release.put(True)
            process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        for queue in (report, release):
            queue.close()
            queue.join_thread()


def test_a_live_replicas_work_is_left_alone_and_a_dead_ones_interrupted_at_once(
    store: Store,
) -> None:
    url = store.url.render_as_string(hide_password=False)
    with worker(url) as (process, _release, (plan_id, apply_id)):
        # another replica starting: the owner of both is alive, nothing is touched
        found = recovery.recover(store)
        assert not found
        assert store.get_plan(plan_id).status is RunStatus.RUNNING
        assert store.get_apply(apply_id).status is RunStatus.RUNNING
        process.kill()
        process.join(10)
        killed = time.monotonic()
        # its locks die with it: PostgreSQL drops them with the connection, SQLite sees
        # that the holder's process is gone (the lease of 120 s plays no part). Each lock
        # has its own connection, whose backend notices the death on its own: the plan
        # and the apply may be recovered by different passes.
        found = recovery.Recovered()
        while time.monotonic() - killed < 5 and not (found.plans and found.applies):
            again = recovery.recover(store)
            found.plans += again.plans
            found.applies += again.applies
            time.sleep(0.05)
        assert time.monotonic() - killed < 5
    assert [p.id for p in found.plans] == [plan_id]
    assert [a.id for a in found.applies] == [apply_id]
    plan = store.get_plan(plan_id)
    assert plan.status is RunStatus.INTERRUPTED and plan.finished_at is not None
    assert plan.error is not None and "stopped before the plan finished" in plan.error
    applied = store.get_apply(apply_id)
    assert applied.status is RunStatus.INTERRUPTED and applied.finished_at is not None
    holder = locks.Holder.parse(applied.owner or "")
    assert holder is not None and f"{holder.host}:{holder.pid}" in (applied.error or "")
    by_id = {a.action_id: a for a in applied.actions}
    assert by_id[1].status is ActionStatus.SUCCEEDED  # done stays done
    assert by_id[2].status is ActionStatus.INTERRUPTED
    assert by_id[2].error == "the apply was interrupted while it ran"
    assert by_id[2].finished_at is not None
    assert by_id[3].status is ActionStatus.DEFERRED  # decided at plan time: not touched
    # the streams of both end with their final event
    events = store.list_events(0, apply_id=apply_id, limit=100)
    assert events[-1].type == EventType.APPLY_INTERRUPTED.value
    assert events[-1].payload["error"] == applied.error
    plan_events = store.list_events(0, plan_id=plan_id, limit=100)
    assert plan_events[-1].type == EventType.PLAN_INTERRUPTED.value
    # and the lock is free for a new apply
    with store.apply_lock(REPO) as held:
        assert held
    assert not recovery.recover(store)  # nothing left: a second pass is a no-op


def test_interrupted_is_terminal(store: Store) -> None:
    plan_id = planned(store, REPO)
    applied = store.create_apply(plan_id)
    done = recovery.interrupt_apply(store, applied.id, "interrupted: test")
    assert done is not None and done.status is RunStatus.INTERRUPTED
    # planned actions never started: interrupted too, said so
    assert {a.action_id: a.status for a in done.actions}[1] is ActionStatus.INTERRUPTED
    assert recovery.interrupt_apply(store, applied.id, "again") is None
    with pytest.raises(Exception, match="interrupted; it cannot become"):
        store.finish_apply(applied.id)
    record = store.create_plan(REPO)
    recovery.interrupt_plan(store, record.id, "interrupted: test")
    with pytest.raises(Exception, match="interrupted; it cannot become"):
        store.start_plan(record.id)


def test_plans_of_an_unknown_owner_are_interrupted(store: Store) -> None:
    """Rows recorded by an older version have no owner: no process can finish them."""
    record = store.create_plan(REPO)
    assert [p.id for p in recovery.recover(store).plans] == [record.id]


def test_a_lease_of_a_dead_process_of_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    """Leases are SQLite's (PostgreSQL's advisory locks are covered above)."""
    with Store.open(f"sqlite:///{tmp_path / 'm.db'}", lock_lease_seconds=120) as store:
        dead = SPAWN.Process(target=time.sleep, args=(0,))
        dead.start()
        dead.join()
        gone = locks.Holder.parse(locks.new_owner())
        assert gone is not None
        owner = str(locks.Holder(gone.host, dead.pid or 0, gone.started, gone.namespace, "x"))
        assert locks.holder_alive(owner) is False
        assert locks.holder_alive(locks.new_owner()) is True
        assert locks.holder_alive("otherhost:1:2:3:4") is None
        assert locks.holder_alive("old-format:12:abc") is None
        held = store.try_lock("x", owner=owner)
        assert held is not None
        held._stop.set()  # a holder that stops renewing, as a dead one would
        assert store.try_lock("x") is not None  # PID and start time differ: taken at once
