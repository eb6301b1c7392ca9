"""Applies of stored plans and the progress of each of their actions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from metalform.store.core import (
    DEFAULT_PAGE_SIZE,
    get_or_404,
    page,
    page_rows,
    run_row,
    to_record,
)
from metalform.store.errors import ConflictError
from metalform.store.ids import new_id, parse_id
from metalform.store.plans import UNFINISHED, plan_row
from metalform.store.records import (
    ActionResult,
    ApplyRecord,
    Page,
    ResourceStatusUpdate,
    RunStatus,
    Trigger,
)
from metalform.store.resource_status import ResourceStatusStore
from metalform.store.tables import ApplyActionRow, ApplyRow, RepositoryRow
from reconciler.model.events import EventType
from reconciler.model.plan import ActionStatus, Plan


class ApplyStore(ResourceStatusStore):
    """Applies and their actions (a finished action also updates its resource's status)."""

    def create_apply(
        self,
        plan_id: str,
        *,
        trigger: Trigger = Trigger.CLI,
        who: str | None = None,
        owner: str | None = None,
    ) -> ApplyRecord:
        """Record a new apply of a succeeded plan, `pending`, with one row per action of the
        plan in its plan-time status (planned, deferred or refused). Appends `apply.created`.

        Does not take the repository's apply lock: hold `apply_lock()` around running it.
        """
        with self._write() as session:
            planned = plan_row(session, plan_id)
            if planned.status != RunStatus.SUCCEEDED.value or planned.document is None:
                raise ConflictError(
                    f"plan {planned.id} is {planned.status}; only a succeeded plan can be applied"
                )
            plan = Plan.model_validate(planned.document)
            row = ApplyRow(
                id=new_id(),
                plan_id=planned.id,
                repository=planned.repository,
                status=RunStatus.PENDING.value,
                trigger=Trigger(trigger).value,
                who=who,
                revision=plan.revision,
                owner=owner,
                error=None,
                created_at=self._now(),
            )
            session.add(row)
            session.flush()
            session.add_all(
                ApplyActionRow(
                    apply_id=row.id,
                    action_id=action.id,
                    address=action.address,
                    operation=action.operation,
                    status=action.status.value,
                )
                for action in plan.actions
            )
            session.flush()
            self._append_event(
                session,
                EventType.APPLY_CREATED,
                repository=row.repository,
                plan_id=row.plan_id,
                apply_id=row.id,
                payload={"trigger": row.trigger, "who": who, "actions": len(plan.actions)},
            )
            return _apply_record(session, row, with_actions=True)

    def start_apply(self, apply_id: str) -> ApplyRecord:
        """Mark an apply `running`. Appends `apply.started`."""
        with self._write() as session:
            row = _apply_row(session, apply_id, for_update=True)
            with self._transition(session, row, RunStatus.RUNNING):
                record = _apply_record(session, row, with_actions=False)
            return record

    def finish_apply(self, apply_id: str, *, error: str | None = None) -> ApplyRecord:
        """Mark an apply `succeeded`, or `failed` when `error` is given.

        On success the repository's last applied revision moves to the plan's revision.
        Appends `apply.succeeded` or `apply.failed`.
        """
        status = RunStatus.SUCCEEDED if error is None else RunStatus.FAILED
        with self._write() as session:
            row = _apply_row(session, apply_id, for_update=True)
            with self._transition(session, row, status, error=error) as change:
                if status is RunStatus.SUCCEEDED:
                    session.execute(
                        update(RepositoryRow)
                        .where(RepositoryRow.key == row.repository)
                        .values(
                            last_applied_revision=row.revision,
                            last_applied_at=change.now,
                            last_apply_id=row.id,
                        )
                    )
                record = _apply_record(session, row, with_actions=False)
                change.payload.update(error=error, counts=record.counts)
            return record

    def interrupt_apply(self, apply_id: str, reason: str) -> ApplyRecord | None:
        """Mark a pending or running apply and its unfinished actions `interrupted`; appends
        `apply.interrupted` (the last event of its stream). None when it ended meanwhile.

        The caller must hold the repository's apply lock, or know its runner is gone (see
        `metalform.store.recovery`)."""
        with self._write() as session:
            row = _apply_row(session, apply_id, for_update=True)
            if row.status not in UNFINISHED:
                return None
            with self._transition(session, row, RunStatus.INTERRUPTED, error=reason) as change:
                for action, was in (
                    (ActionStatus.RUNNING.value, "while it ran"),
                    (ActionStatus.PLANNED.value, "before it started"),
                ):
                    session.execute(
                        update(ApplyActionRow)
                        .where(ApplyActionRow.apply_id == row.id, ApplyActionRow.status == action)
                        .values(
                            status=ActionStatus.INTERRUPTED.value,
                            finished_at=change.now,
                            error=f"the apply was interrupted {was}",
                        )
                    )
                session.flush()
                record = _apply_record(session, row, with_actions=True)
                change.payload.update(error=reason, counts=record.counts)
            return record

    def record_action(
        self,
        apply_id: str,
        action_id: int,
        status: ActionStatus,
        *,
        error: str | None = None,
    ) -> ActionResult:
        """Record an action's progress: `running` stamps its start; a final status stamps
        its end and duration, and the resource's last action. Appends `action.updated`."""
        status = ActionStatus(status)
        with self._write() as session:
            apply_row = _apply_row(session, apply_id)
            if RunStatus(apply_row.status).terminal:
                raise ConflictError(f"apply {apply_row.id} is {apply_row.status}; it is over")
            row = get_or_404(
                session,
                ApplyActionRow,
                (apply_row.id, action_id),
                what="action",
                shown=f"{action_id} of apply {apply_id}",
                for_update=True,
            )
            self._stamp_action(session, apply_row, row, status, error)
            result = action_record(row)
            self._append_event(
                session,
                EventType.ACTION_UPDATED,
                repository=apply_row.repository,
                plan_id=apply_row.plan_id,
                apply_id=apply_row.id,
                address=row.address,
                payload={
                    "actionId": row.action_id,
                    "operation": row.operation,
                    "status": row.status,
                    "durationSeconds": row.duration_seconds,
                    "error": error,
                },
            )
            return result

    def _stamp_action(
        self,
        session: Session,
        apply_row: ApplyRow,
        row: ApplyActionRow,
        status: ActionStatus,
        error: str | None,
    ) -> None:
        """Set an action's status and times; a succeeded or failed one is its resource's
        last action."""
        now = self._now()
        row.status = status.value
        row.error = error
        if status is ActionStatus.RUNNING:
            row.started_at = now
            row.finished_at = None
            row.duration_seconds = None
        elif status.terminal:
            row.finished_at = now
            if row.started_at is not None:
                row.duration_seconds = (now - row.started_at).total_seconds()
            if status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED):
                self._upsert_resource(
                    session,
                    apply_row.repository,
                    ResourceStatusUpdate(
                        address=row.address,
                        last_action=row.operation,
                        last_result=status,
                        last_action_at=now,
                    ),
                )

    def get_apply(self, apply_id: str) -> ApplyRecord:
        """An apply with every action's progress; raises `NotFoundError`."""
        with self._read() as session:
            return _apply_record(session, _apply_row(session, apply_id), with_actions=True)

    def list_applies(
        self,
        *,
        repository: str | None = None,
        plan_id: str | None = None,
        status: RunStatus | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        before: str | None = None,
    ) -> Page[ApplyRecord]:
        """Applies, newest first, with per-status action counts (not the actions)."""
        query = select(ApplyRow)
        if repository is not None:
            query = query.where(ApplyRow.repository == repository)
        if plan_id is not None:
            canonical = parse_id(plan_id)
            if canonical is None:
                return Page([])
            query = query.where(ApplyRow.plan_id == canonical)
        if status is not None:
            query = query.where(ApplyRow.status == RunStatus(status).value)
        with self._read() as session:
            rows = page_rows(session, query, ApplyRow.id, limit, before)
            counts = _action_counts(session, [row.id for row in rows])
            items = [apply_record(row, counts.get(row.id, {}), ()) for row in rows]
        return page(items, limit)

    def unfinished_applies(self, repository: str | None = None) -> list[tuple[str, str]]:
        """(id, repository) of every pending or running apply, oldest first (for recovery)."""
        query = select(ApplyRow.id, ApplyRow.repository).where(ApplyRow.status.in_(UNFINISHED))
        if repository is not None:
            query = query.where(ApplyRow.repository == repository)
        with self._read() as session:
            return [(i, r) for i, r in session.execute(query.order_by(ApplyRow.id))]


def _apply_row(session: Session, apply_id: str, *, for_update: bool = False) -> ApplyRow:
    return run_row(session, ApplyRow, "apply", apply_id, for_update=for_update)


def _action_counts(session: Session, apply_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    if not apply_ids:
        return counts
    query = (
        select(ApplyActionRow.apply_id, ApplyActionRow.status, func.count())
        .where(ApplyActionRow.apply_id.in_(apply_ids))
        .group_by(ApplyActionRow.apply_id, ApplyActionRow.status)
    )
    for apply_id, status, n in session.execute(query):
        counts.setdefault(apply_id, {})[status] = int(n)
    return counts


def _apply_record(session: Session, row: ApplyRow, *, with_actions: bool) -> ApplyRecord:
    actions: tuple[ActionResult, ...] = ()
    if with_actions:
        query = (
            select(ApplyActionRow)
            .where(ApplyActionRow.apply_id == row.id)
            .order_by(ApplyActionRow.action_id)
        )
        actions = tuple(action_record(a) for a in session.scalars(query))
    counts = _action_counts(session, [row.id]).get(row.id, {})
    return apply_record(row, counts, actions)


def apply_record(
    row: ApplyRow, counts: dict[str, int], actions: tuple[ActionResult, ...]
) -> ApplyRecord:
    return to_record(
        ApplyRecord,
        row,
        status=RunStatus(row.status),
        trigger=Trigger(row.trigger),
        counts=counts,
        actions=actions,
    )


def action_record(row: ApplyActionRow) -> ActionResult:
    return to_record(ActionResult, row, status=ActionStatus(row.status))
