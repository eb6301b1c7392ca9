"""The state store on SQLite and PostgreSQL: plans, applies, events, webhooks, resource status."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from metalform.store import (
    ConflictError,
    EventType,
    NotFoundError,
    ResourceStatusUpdate,
    RunStatus,
    Store,
    StoreError,
    Trigger,
)
from metalform.store.ids import new_id
from reconciler.model.base import Diagnostic, Health, Severity, SyncStatus
from reconciler.model.plan import Action, ActionStatus, Plan, Summary

REPO = "https://git.example/infra.git#main:."


def make_plan(revision: str = "0123abcd") -> Plan:
    return Plan(
        revision=revision,
        created_at="2025-01-01T00:00:00Z",
        actions=[
            Action(id=1, address="Server/node-01", operation="bios.set", params={"A": 1}),
            Action(id=2, address="Server/node-01", operation="power.reset", depends_on=(1,)),
            Action(
                id=3,
                address="Server/node-02",
                operation="power.on",
                status=ActionStatus.DEFERRED,
                reason="maintenance window",
            ),
        ],
        summary=Summary(update=2, noop=4, deferred=1),
        diagnostics=[Diagnostic(severity=Severity.WARNING, message="slow BMC")],
    )


def planned(store: Store, repository: str = REPO, revision: str = "0123abcd") -> str:
    record = store.create_plan(repository, ref="main", trigger=Trigger.API, who="ci")
    store.start_plan(record.id)
    store.finish_plan(record.id, make_plan(revision))
    return record.id


# -- plans -------------------------------------------------------------------------------------


def test_plan_lifecycle_stores_the_plan_by_alias(store: Store) -> None:
    created = store.create_plan(REPO, ref="main", trigger=Trigger.WEBHOOK, who="alice")
    assert created.status is RunStatus.PENDING
    assert created.trigger is Trigger.WEBHOOK
    assert created.document is None and created.plan() is None
    assert created.created_at.tzinfo is not None

    running = store.start_plan(created.id)
    assert running.status is RunStatus.RUNNING and running.started_at is not None

    plan = make_plan()
    done = store.finish_plan(created.id, plan)
    assert done.status is RunStatus.SUCCEEDED
    assert done.revision == "0123abcd"
    assert done.summary == plan.summary.model_dump(mode="json", by_alias=True)
    assert {k: done.summary[k] for k in ("create", "update", "noop", "deferred")} == {
        "create": 0,
        "update": 2,
        "noop": 4,
        "deferred": 1,
    }
    assert (done.action_count, done.diagnostics_count) == (3, 1)

    fetched = store.get_plan(created.id)
    assert fetched.document is not None
    # camelCase on the wire, exactly as `metalform plan -o` writes it
    assert fetched.document["formatVersion"] == 1
    assert fetched.document["actions"][1]["dependsOn"] == [1]
    assert fetched.plan() == plan
    assert fetched.finished_at is not None and fetched.started_at is not None
    assert fetched.finished_at >= fetched.started_at >= fetched.created_at


def test_failed_plan_keeps_its_error_and_cannot_finish_again(store: Store) -> None:
    created = store.create_plan(REPO)
    failed = store.fail_plan(created.id, "git fetch failed: repository not found")
    assert failed.status is RunStatus.FAILED
    assert failed.error == "git fetch failed: repository not found"
    with pytest.raises(ConflictError):
        store.finish_plan(created.id, make_plan())
    with pytest.raises(ConflictError):
        store.start_plan(created.id)


def test_unknown_or_malformed_ids_are_not_found(store: Store) -> None:
    for bad in (new_id(), "not-a-uuid", ""):
        with pytest.raises(NotFoundError):
            store.get_plan(bad)
        with pytest.raises(NotFoundError):
            store.get_apply(bad)


def test_plans_page_newest_first_without_gaps_or_repeats(store: Store) -> None:
    ids = [store.create_plan(REPO).id for _ in range(7)]
    store.create_plan("other-repository")

    seen: list[str] = []
    page = store.list_plans(repository=REPO, limit=3)
    pages = 1
    seen += [p.id for p in page.items]
    while page.next_before is not None:
        # a plan made while paging must not shift the pages being read
        store.create_plan(REPO)
        page = store.list_plans(repository=REPO, limit=3, before=page.next_before)
        seen += [p.id for p in page.items]
        pages += 1
    assert seen == list(reversed(ids))
    assert pages == 3
    assert all(p.document is None for p in store.list_plans(limit=50).items)
    assert len(store.list_plans(limit=50).items) == 10


def test_plan_listing_filters(store: Store) -> None:
    ok = planned(store)
    store.fail_plan(store.create_plan(REPO).id, "boom")
    pr = store.create_plan(REPO, pull_request="github:org/infra#12")
    assert [p.id for p in store.list_plans(status=RunStatus.SUCCEEDED).items] == [ok]
    assert [p.id for p in store.list_plans(pull_request="github:org/infra#12").items] == [pr.id]
    assert store.list_plans(repository="nope").items == []
    with pytest.raises(StoreError):
        store.list_plans(before="garbage")


# -- applies -----------------------------------------------------------------------------------


def test_apply_records_every_action_with_timings(store: Store) -> None:
    plan_id = planned(store)
    apply = store.create_apply(plan_id, trigger=Trigger.API, who="bob")
    assert apply.status is RunStatus.PENDING
    assert apply.revision == "0123abcd"
    assert [(a.action_id, a.status) for a in apply.actions] == [
        (1, ActionStatus.PLANNED),
        (2, ActionStatus.PLANNED),
        (3, ActionStatus.DEFERRED),
    ]
    assert apply.counts == {"planned": 2, "deferred": 1}

    store.start_apply(apply.id)
    running = store.record_action(apply.id, 1, ActionStatus.RUNNING)
    assert running.started_at is not None and running.finished_at is None
    done = store.record_action(apply.id, 1, ActionStatus.SUCCEEDED)
    assert done.finished_at is not None and done.duration_seconds is not None
    assert done.duration_seconds >= 0
    store.record_action(apply.id, 2, ActionStatus.RUNNING)
    store.record_action(apply.id, 2, ActionStatus.FAILED, error="BMC returned 500")
    finished = store.finish_apply(apply.id, error="1 action failed")

    assert finished.status is RunStatus.FAILED and finished.error == "1 action failed"
    got = store.get_apply(apply.id)
    assert {a.action_id: a.status for a in got.actions} == {
        1: ActionStatus.SUCCEEDED,
        2: ActionStatus.FAILED,
        3: ActionStatus.DEFERRED,
    }
    assert got.actions[1].error == "BMC returned 500"
    assert got.counts == {"succeeded": 1, "failed": 1, "deferred": 1}
    with pytest.raises(ConflictError):
        store.record_action(apply.id, 1, ActionStatus.RUNNING)
    with pytest.raises(NotFoundError):
        store.record_action(store.create_apply(plan_id).id, 99, ActionStatus.RUNNING)

    # the last action on a resource shows in its status
    node = store.get_resource_status(REPO, "Server/node-01")
    assert node is not None
    assert (node.last_action, node.last_result) == ("power.reset", ActionStatus.FAILED)
    assert node.sync is SyncStatus.UNKNOWN


def test_only_a_succeeded_plan_can_be_applied(store: Store) -> None:
    pending = store.create_plan(REPO)
    with pytest.raises(ConflictError):
        store.create_apply(pending.id)


def test_repository_status_tracks_planned_and_applied_revisions(store: Store) -> None:
    assert store.repository_status(REPO) is None
    first = planned(store, revision="aaaa")
    apply = store.create_apply(first)
    store.start_apply(apply.id)
    store.finish_apply(apply.id)
    planned(store, revision="bbbb")
    # a pull request's plan is not the tracked branch's
    pr = store.create_plan(REPO, pull_request="github:org/infra#3")
    store.finish_plan(pr.id, make_plan("cccc"))

    status = store.repository_status(REPO)
    assert status is not None
    assert (status.last_planned_revision, status.last_applied_revision) == ("bbbb", "aaaa")
    assert status.last_apply_id == apply.id
    assert status.last_applied_at is not None and status.last_planned_at is not None
    assert [r.key for r in store.list_repositories()] == [REPO]


def test_history_interleaves_plans_and_applies_newest_first(store: Store) -> None:
    made: list[str] = []
    for _ in range(3):
        plan_id = planned(store)
        made.append(plan_id)
        made.append(store.create_apply(plan_id).id)
    got: list[str] = []
    before = None
    while True:
        page = store.list_history(repository=REPO, limit=4, before=before)
        got += [r.id for r in page.items]
        if page.next_before is None:
            break
        before = page.next_before
    assert got == list(reversed(made))


# -- events ------------------------------------------------------------------------------------


def test_events_follow_state_changes_and_list_after_an_id(store: Store) -> None:
    assert store.last_event_id() == 0
    plan_id = planned(store)
    apply = store.create_apply(plan_id)
    store.start_apply(apply.id)
    store.record_action(apply.id, 1, ActionStatus.RUNNING)
    store.record_action(apply.id, 1, ActionStatus.SUCCEEDED)
    store.finish_apply(apply.id)
    drift = store.append_event(
        EventType.DRIFT_DETECTED, repository=REPO, address="Server/node-02", payload={"n": 1}
    )

    events = store.list_events()
    assert [e.type for e in events] == [
        "plan.created",
        "plan.started",
        "plan.succeeded",
        "apply.created",
        "apply.started",
        "action.updated",
        "action.updated",
        "apply.succeeded",
        "drift.detected",
    ]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert store.last_event_id() == drift.id == ids[-1]
    assert events[6].payload["status"] == "succeeded"
    assert events[6].address == "Server/node-01"
    assert drift.payload == {"n": 1}

    # resume a stream: only what came after the last id seen
    assert [e.type for e in store.list_events(after=ids[4])] == [e.type for e in events[5:]]
    assert [e.id for e in store.list_events(after=ids[0], limit=2)] == ids[1:3]
    assert store.list_events(after=ids[-1]) == []
    by_apply = store.list_events(apply_id=apply.id)
    assert [e.type for e in by_apply] == [
        "apply.created",
        "apply.started",
        "action.updated",
        "action.updated",
        "apply.succeeded",
    ]
    assert [e.id for e in store.list_events(types=[EventType.DRIFT_DETECTED])] == [drift.id]
    assert store.list_events(plan_id="not-an-id") == []


def test_waiting_for_events_returns_as_soon_as_one_arrives(store: Store) -> None:
    last = store.last_event_id()
    assert store.wait_for_events(last, timeout_seconds=0.2, poll_seconds=0.05) == []
    timer = threading.Timer(0.3, lambda: store.append_event("test.later", repository=REPO))
    timer.start()
    try:
        started = time.monotonic()
        events = store.wait_for_events(last, timeout_seconds=10, poll_seconds=0.05)
        assert [e.type for e in events] == ["test.later"]
        assert time.monotonic() - started < 5
    finally:
        timer.join()


def test_concurrent_writers_never_make_a_follower_skip_an_event(store: Store) -> None:
    """Ids must become visible in order, or a stream reading "after N" loses events."""
    writers, per_writer = 6, 15
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for i in range(per_writer):
                store.append_event("test.tick", payload={"i": i})
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for thread in threads:
        thread.start()
    followed: list[int] = []
    last = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        writing = any(t.is_alive() for t in threads)
        batch = store.list_events(after=last, limit=7)
        followed += [e.id for e in batch]
        if batch:
            last = batch[-1].id
        elif not writing:
            break  # all written, and a read after that found nothing more
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(followed) == writers * per_writer
    assert sorted(followed) == followed
    assert followed == [e.id for e in store.list_events(limit=500)]


# -- webhook deliveries ------------------------------------------------------------------------


def test_webhook_deliveries_are_deduplicated_per_forge(store: Store) -> None:
    assert store.record_delivery("github", "d-1", event="push") is True
    assert store.record_delivery("github", "d-1", event="push") is False
    assert store.record_delivery("gitlab", "d-1", event="Push Hook") is True
    store.set_delivery_result("github", "d-1", "planned")
    delivery = store.get_delivery("github", "d-1")
    assert delivery is not None
    assert (delivery.event, delivery.result) == ("push", "planned")
    assert store.get_delivery("github", "d-2") is None
    with pytest.raises(NotFoundError):
        store.set_delivery_result("github", "d-2", "x")

    assert store.prune_deliveries(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert store.record_delivery("github", "d-1", event="push") is True


def test_concurrent_duplicate_deliveries_are_accepted_once(store: Store) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def deliver() -> None:
        accepted = store.record_delivery("github", "same", event="push")
        with lock:
            results.append(accepted)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


# -- resource status ---------------------------------------------------------------------------


def test_resource_status_upsert_and_queries(store: Store) -> None:
    store.upsert_resource_statuses(
        REPO,
        [
            ResourceStatusUpdate(
                "Server/gpu-1",
                labels={"site": "yul1", "gpu": "l40"},
                sync=SyncStatus.SYNCED,
                health=Health.HEALTHY,
            ),
            ResourceStatusUpdate(
                "Server/gpu-2",
                labels={"site": "yul1", "gpu": "h100"},
                sync=SyncStatus.OUT_OF_SYNC,
                health=Health.UNREACHABLE,
                message="BMC did not answer",
            ),
            ResourceStatusUpdate(
                "Server/cpu-1",
                labels={"site": "fra2"},
                sync=SyncStatus.OUT_OF_SYNC,
                health=Health.HEALTHY,
            ),
            ResourceStatusUpdate("Aggregate/gpu", sync=SyncStatus.SYNCED),
        ],
    )
    store.upsert_resource_status(
        "other", ResourceStatusUpdate("Server/gpu-1", labels={"site": "yul1"})
    )

    def addresses(**filters: object) -> list[str]:
        return [r.address for r in store.list_resource_status(REPO, **filters)]  # type: ignore[arg-type]

    assert addresses() == ["Aggregate/gpu", "Server/cpu-1", "Server/gpu-1", "Server/gpu-2"]
    assert addresses(kind="Server") == ["Server/cpu-1", "Server/gpu-1", "Server/gpu-2"]
    assert addresses(labels={"site": "yul1"}) == ["Server/gpu-1", "Server/gpu-2"]
    assert addresses(labels={"site": "yul1", "gpu": "l40"}) == ["Server/gpu-1"]
    assert addresses(labels={"gpu": None}) == ["Server/gpu-1", "Server/gpu-2"]
    assert addresses(sync=SyncStatus.OUT_OF_SYNC) == ["Server/cpu-1", "Server/gpu-2"]
    assert addresses(health=[Health.UNREACHABLE, Health.DEGRADED]) == ["Server/gpu-2"]
    assert addresses(kind="Server", sync=SyncStatus.SYNCED, labels={"site": "yul1"}) == [
        "Server/gpu-1"
    ]
    assert len(store.list_resource_status()) == 5

    gpu2 = store.get_resource_status(REPO, "Server/gpu-2")
    assert gpu2 is not None
    assert (gpu2.kind, gpu2.name, gpu2.message) == ("Server", "gpu-2", "BMC did not answer")
    aggregate = store.get_resource_status(REPO, "Aggregate/gpu")
    assert aggregate is not None and aggregate.health is Health.UNKNOWN

    # a partial update keeps what it does not name; new labels replace the old ones
    store.upsert_resource_status(
        REPO, ResourceStatusUpdate("Server/gpu-2", health=Health.HEALTHY, labels={"site": "yul2"})
    )
    gpu2 = store.get_resource_status(REPO, "Server/gpu-2")
    assert gpu2 is not None
    assert (gpu2.sync, gpu2.health, gpu2.labels) == (
        SyncStatus.OUT_OF_SYNC,
        Health.HEALTHY,
        {"site": "yul2"},
    )
    assert addresses(labels={"gpu": None}) == ["Server/gpu-1"]

    status = store.repository_status(REPO)
    assert status is not None
    assert (status.resources, status.drift) == (4, 2)
    assert status.by_kind == {"Server": 3, "Aggregate": 1}
    assert status.by_health == {"Healthy": 3, "Unknown": 1}

    # resources gone from Git are pruned; their labels go with them
    store.upsert_resource_statuses(REPO, [ResourceStatusUpdate("Server/gpu-1")], prune=True)
    assert addresses() == ["Server/gpu-1"]
    assert addresses(labels={"site": "yul1"}) == ["Server/gpu-1"]
    assert store.delete_resource_status(REPO, "Server/gpu-1") is True
    assert store.delete_resource_status(REPO, "Server/gpu-1") is False
    assert addresses(labels={"site": "yul1"}) == []
    with pytest.raises(StoreError):
        store.upsert_resource_status(REPO, ResourceStatusUpdate("no-slash"))


# -- pull request comments ---------------------------------------------------------------------


def test_pr_comment_ids_are_remembered_and_replaced(store: Store) -> None:
    assert store.get_pr_comment("github", "org/infra", 12) is None
    store.set_pr_comment("github", "org/infra", 12, "1001")
    store.set_pr_comment("github", "org/infra", 12, "1002")
    store.set_pr_comment("gitlab", "org/infra", 12, "7")
    assert store.get_pr_comment("github", "org/infra", 12) == "1002"
    assert store.get_pr_comment("gitlab", "org/infra", 12) == "7"
    assert store.get_pr_comment("github", "org/infra", 13) is None


# -- clock and time ----------------------------------------------------------------------------


def test_times_are_aware_utc_from_the_given_clock(store_url: str) -> None:
    fixed = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    with Store.open(store_url, clock=lambda: fixed) as store:
        record = store.create_plan(REPO)
        assert store.get_plan(record.id).created_at == fixed
        assert store.list_events()[0].at == fixed
        with pytest.raises(StoreError):
            store.prune_deliveries(datetime(2030, 1, 1))  # naive: which zone?
