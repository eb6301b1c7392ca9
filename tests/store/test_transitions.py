"""The one status transition of plans and applies: what it stamps, the event it appends, and
that a refused one leaves nothing behind (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from metalform.store import ConflictError, EventType, RunStatus, Store
from tests.store.test_store import REPO, make_plan, planned


def test_a_refused_transition_leaves_no_trace(store: Store) -> None:
    plan_id = store.create_plan(REPO).id
    store.fail_plan(plan_id, "boom")
    last = store.last_event_id()

    with pytest.raises(ConflictError, match=f"plan {plan_id} is failed"):
        store.finish_plan(plan_id, make_plan("feedbeef"))

    kept = store.get_plan(plan_id)
    assert (kept.status, kept.error, kept.document, kept.revision) == (
        RunStatus.FAILED,
        "boom",
        None,
        None,
    )
    status = store.repository_status(REPO)
    assert status is not None and status.last_planned_revision is None
    assert store.list_events(last) == []


def test_each_transition_appends_its_event_naming_plan_and_apply(store: Store) -> None:
    plan_id = planned(store)
    apply_id = store.create_apply(plan_id).id
    store.start_apply(apply_id)
    store.interrupt_apply(apply_id, "the host went away")

    events = store.list_events(repository=REPO)
    assert [(e.type, e.plan_id, e.apply_id) for e in events] == [
        (EventType.PLAN_CREATED.value, plan_id, None),
        (EventType.PLAN_STARTED.value, plan_id, None),
        (EventType.PLAN_SUCCEEDED.value, plan_id, None),
        (EventType.APPLY_CREATED.value, plan_id, apply_id),
        (EventType.APPLY_STARTED.value, plan_id, apply_id),
        (EventType.APPLY_INTERRUPTED.value, plan_id, apply_id),
    ]
    assert events[-1].payload["error"] == "the host went away"
    assert events[-1].payload["counts"] == {"interrupted": 2, "deferred": 1}


def test_times_are_stamped_by_the_status_reached(store: Store) -> None:
    started = store.create_plan(REPO).id
    store.start_plan(started)
    failed = store.fail_plan(started, "no route to the BMC")
    assert failed.started_at is not None and failed.finished_at is not None

    # a plan that fails before it starts did run (briefly): it gets a start time
    failed_early = store.fail_plan(store.create_plan(REPO).id, "bad ref")
    assert failed_early.started_at == failed_early.finished_at is not None

    # an interrupted one may never have started: no start time is made up for it
    pending = store.create_plan(REPO).id
    interrupted = store.interrupt_plan(pending, "stopped")
    assert interrupted is not None and interrupted.status is RunStatus.INTERRUPTED
    assert interrupted.started_at is None and interrupted.finished_at is not None
    assert store.interrupt_plan(pending, "again") is None


def test_unfinished_lists_only_pending_and_running_records(store: Store) -> None:
    pending = store.create_plan(REPO, owner="host:1:a").id
    running = store.create_plan(REPO).id
    store.start_plan(running)
    plan_id = planned(store)
    applying = store.create_apply(plan_id).id
    done = store.create_apply(plan_id).id
    store.finish_apply(done, error="refused")

    assert store.unfinished_plans() == [(pending, "host:1:a"), (running, None)]
    assert store.unfinished_applies() == [(applying, REPO)]
    assert store.unfinished_applies("another-repository") == []
