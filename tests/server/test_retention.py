"""Retention prunes what is due (too old, or beyond the count kept per repository) and
nothing else: not what runs, not the last plan or apply, not a plan a kept apply names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from metalform.store import RunStatus, Store
from metalform.store.retention import prune
from metalform.store.tables import ApplyRow, EventRow, PlanRow, WebhookDeliveryRow
from tests.server.harness import Harness
from tests.store.test_store import make_plan

REPO = "file:///infra.git#main:."
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def age(store: Store, table: type, key: str, when: datetime, column: str = "created_at") -> None:
    """Backdate a row (the store stamps rows with its own clock)."""
    with store._write() as session:
        session.execute(update(table).where(table.id == key).values({column: when}))


def plan(store: Store, *, finished: bool = True) -> str:
    record = store.create_plan(REPO, ref="main")
    if finished:
        store.start_plan(record.id)
        store.finish_plan(record.id, make_plan())
    return record.id


def ids(store: Store) -> tuple[set[str], set[str]]:
    plans = {p.id for p in store.list_plans(limit=500).items}
    applies = {a.id for a in store.list_applies(limit=500).items}
    return plans, applies


def test_old_plans_applies_events_and_deliveries_go_and_the_rest_stays(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        old = plan(store)
        old_with_kept_apply = plan(store)
        running = plan(store, finished=False)
        recent = plan(store)
        applied_old = store.create_apply(old, who="t")
        store.start_apply(applied_old.id)
        store.finish_apply(applied_old.id)
        kept_apply = store.create_apply(old_with_kept_apply, who="t")
        store.start_apply(kept_apply.id)
        store.finish_apply(kept_apply.id)
        last = plan(store)  # the repository's last plan: never pruned
        long_ago = NOW - timedelta(days=100)
        for key in (old, old_with_kept_apply, running, last):
            age(store, PlanRow, key, long_ago)
        age(store, ApplyRow, applied_old.id, long_ago)
        store.record_delivery("github", "d-old", event="push")
        store.record_delivery("github", "d-new", event="push")
        with store._write() as session:
            session.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.delivery_id == "d-old")
                .values(received_at=long_ago)
            )
            session.execute(update(EventRow).where(EventRow.plan_id == recent).values(at=long_ago))
        events_before = len(store.list_events(0, limit=1000))

        pruned = prune(store, now=NOW, max_age=timedelta(days=90))

        plans, applies = ids(store)
        assert plans == {old_with_kept_apply, running, recent, last}
        assert applies == {kept_apply.id}
        assert store.get_delivery("github", "d-old") is None
        assert store.get_delivery("github", "d-new") is not None
        assert (pruned.plans, pruned.applies, pruned.deliveries) == (1, 1, 1)
        assert pruned.events == events_before - len(store.list_events(0, limit=1000))
        assert not [e for e in store.list_events(0, limit=1000) if e.plan_id == old]
        assert not [e for e in store.list_events(0, limit=1000) if e.plan_id == recent]
        assert store.get_plan(running).status is RunStatus.PENDING
        # a second pass finds nothing more
        assert not prune(store, now=NOW, max_age=timedelta(days=90))


def test_beyond_the_count_per_repository_the_oldest_go(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        made = [plan(store) for _ in range(5)]
        other = store.create_plan("file:///other.git#main:.", ref="main")
        pruned = prune(store, now=NOW, keep_per_repository=2)
        plans, _ = ids(store)
        assert plans == {*made[-2:], other.id}
        assert pruned.plans == 3
        assert pruned.deliveries == 0  # no age given: deliveries are kept


def test_the_server_prunes_and_counts_it_in_its_metrics(harness: Harness) -> None:
    first = harness.plan()
    last = harness.plan()
    later = datetime.now(UTC) + timedelta(days=365)
    pruned = harness.service.prune(now=later)
    assert pruned.plans == 1
    assert [p.id for p in harness.store.list_plans().items] == [last["id"]]
    assert harness.get(f"/api/v1/plans/{first['id']}").status_code == 404
    metrics = harness.get("/metrics", role=None).text
    assert 'metalform_pruned_records_total{what="plans"} 1.0' in metrics
