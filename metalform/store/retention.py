"""Retention: forget plans, applies, events and webhook deliveries that are old enough.

A plan or apply goes when it ended before the cut-off or when it is beyond the newest `keep`
of its repository. Never pruned: what is still pending or running, the repository's last plan
and last apply (the status and the console show them), and a plan an apply still kept points
to. Events go with their plan or apply, and any event older than the cut-off goes too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from metalform.store.core import chunks, rowcount
from metalform.store.records import RunStatus
from metalform.store.store import Store
from metalform.store.tables import (
    ApplyActionRow,
    ApplyRow,
    EventRow,
    PlanRow,
    RepositoryRow,
    WebhookDeliveryRow,
)

_TERMINAL = [s.value for s in RunStatus if s.terminal]


@dataclass(frozen=True)
class Pruned:
    """How many of each were deleted by one pass."""

    plans: int = 0
    applies: int = 0
    events: int = 0
    deliveries: int = 0

    def __bool__(self) -> bool:
        return any((self.plans, self.applies, self.events, self.deliveries))


def _due(
    session: Session,
    table: type[PlanRow] | type[ApplyRow],
    repository: str,
    cutoff: datetime | None,
    keep: int | None,
    protected: set[str],
) -> list[str]:
    """Ids of ended rows of `repository` older than `cutoff` or beyond the newest `keep`."""
    query = (
        select(table.id, table.status, table.created_at)
        .where(table.repository == repository)
        .order_by(table.id.desc())
    )
    due = []
    for rank, (row_id, status, created_at) in enumerate(session.execute(query)):
        if status not in _TERMINAL or row_id in protected:
            continue
        too_old = cutoff is not None and created_at < cutoff
        too_many = keep is not None and rank >= keep
        if too_old or too_many:
            due.append(row_id)
    return due


def _delete_in(session: Session, column: object, ids: Sequence[str], statement: object) -> int:
    count = 0
    for chunk in chunks(ids, 500):
        count += rowcount(session, statement.where(column.in_(chunk)))  # type: ignore[attr-defined]
    return count


def prune(
    store: Store,
    *,
    now: datetime,
    max_age: timedelta | None = None,
    keep_per_repository: int | None = None,
) -> Pruned:
    """One retention pass in one transaction; returns what it deleted."""
    cutoff = now - max_age if max_age is not None else None
    plans = applies = events = 0
    with store._write() as session:
        for repo in session.scalars(select(RepositoryRow)):
            protected = {i for i in (repo.last_plan_id, repo.last_apply_id) if i is not None}
            apply_ids = _due(session, ApplyRow, repo.key, cutoff, keep_per_repository, protected)
            # a plan that an apply kept here points to stays (the apply names it)
            kept_applies = set(
                session.scalars(
                    select(ApplyRow.plan_id).where(
                        ApplyRow.repository == repo.key, ApplyRow.id.not_in(apply_ids)
                    )
                ).all()
            )
            plan_ids = _due(
                session, PlanRow, repo.key, cutoff, keep_per_repository, protected | kept_applies
            )
            events += _delete_in(session, EventRow.apply_id, apply_ids, delete(EventRow))
            events += _delete_in(session, EventRow.plan_id, plan_ids, delete(EventRow))
            # SQLite enforces ON DELETE CASCADE only with foreign keys on: delete explicitly
            _delete_in(session, ApplyActionRow.apply_id, apply_ids, delete(ApplyActionRow))
            applies += _delete_in(session, ApplyRow.id, apply_ids, delete(ApplyRow))
            plans += _delete_in(session, PlanRow.id, plan_ids, delete(PlanRow))
        deliveries = 0
        if cutoff is not None:
            events += rowcount(session, delete(EventRow).where(EventRow.at < cutoff))
            deliveries = rowcount(
                session, delete(WebhookDeliveryRow).where(WebhookDeliveryRow.received_at < cutoff)
            )
    return Pruned(plans=plans, applies=applies, events=events, deliveries=deliveries)
