"""Planning jobs and the plans they made: created `pending`, then running, then succeeded
(with the plan), failed or interrupted."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from metalform.store.core import DEFAULT_PAGE_SIZE, StoreCore, page, page_rows, run_row, to_record
from metalform.store.ids import new_id
from metalform.store.records import Page, PlanRecord, RunStatus, Trigger
from metalform.store.tables import PlanRow, RepositoryRow
from reconciler.model.events import EventType
from reconciler.model.plan import Plan

UNFINISHED = (RunStatus.PENDING.value, RunStatus.RUNNING.value)


class PlanStore(StoreCore):
    """Plans: their jobs' progress, their documents, their listings."""

    def create_plan(
        self,
        repository: str,
        *,
        ref: str | None = None,
        revision: str | None = None,
        trigger: Trigger = Trigger.CLI,
        who: str | None = None,
        pull_request: str | None = None,
        owner: str | None = None,
    ) -> PlanRecord:
        """Record a new planning job, `pending`. Appends `plan.created`. `owner` names the
        server process that will run it (see `metalform.store.recovery`)."""
        with self._write() as session:
            self._ensure_repository(session, repository)
            row = PlanRow(
                id=new_id(),
                repository=repository,
                status=RunStatus.PENDING.value,
                trigger=Trigger(trigger).value,
                who=who,
                ref=ref,
                revision=revision,
                pull_request=pull_request,
                owner=owner,
                document=None,
                summary={},
                action_count=0,
                diagnostics_count=0,
                error=None,
                created_at=self._now(),
            )
            session.add(row)
            session.flush()
            self._append_event(
                session,
                EventType.PLAN_CREATED,
                repository=repository,
                plan_id=row.id,
                payload={"ref": ref, "trigger": row.trigger, "who": who},
            )
            return plan_record(row, with_document=False)

    def start_plan(self, plan_id: str) -> PlanRecord:
        """Mark a planning job `running`. Appends `plan.started`."""
        with self._write() as session:
            row = plan_row(session, plan_id, for_update=True)
            with self._transition(session, row, RunStatus.RUNNING):
                pass
            return plan_record(row, with_document=False)

    def finish_plan(self, plan_id: str, plan: Plan) -> PlanRecord:
        """Store the plan a job made and mark it `succeeded`. Appends `plan.succeeded`.

        The repository's last planned revision moves to the plan's revision, unless the plan
        is for a pull request.
        """
        document = plan.model_dump(mode="json", by_alias=True)
        summary = plan.summary.model_dump(mode="json", by_alias=True)
        with self._write() as session:
            row = plan_row(session, plan_id, for_update=True)
            with self._transition(session, row, RunStatus.SUCCEEDED) as change:
                row.document = document
                row.revision = plan.revision
                row.summary = summary
                row.action_count = len(plan.actions)
                row.diagnostics_count = len(plan.diagnostics)
                if row.pull_request is None:
                    session.execute(
                        update(RepositoryRow)
                        .where(RepositoryRow.key == row.repository)
                        .values(
                            last_planned_revision=plan.revision,
                            last_planned_at=change.now,
                            last_plan_id=row.id,
                        )
                    )
                change.payload.update(
                    revision=plan.revision,
                    summary=summary,
                    actions=row.action_count,
                    diagnostics=row.diagnostics_count,
                )
            return plan_record(row, with_document=True)

    def fail_plan(self, plan_id: str, error: str) -> PlanRecord:
        """Mark a planning job `failed` with its error message. Appends `plan.failed`."""
        with self._write() as session:
            row = plan_row(session, plan_id, for_update=True)
            with self._transition(session, row, RunStatus.FAILED, error=error) as change:
                change.payload["error"] = error
            return plan_record(row, with_document=True)

    def interrupt_plan(self, plan_id: str, reason: str) -> PlanRecord | None:
        """Mark a pending or running plan `interrupted` with `reason`; appends
        `plan.interrupted`. None when it ended meanwhile (see `metalform.store.recovery`)."""
        with self._write() as session:
            row = plan_row(session, plan_id, for_update=True)
            if row.status not in UNFINISHED:
                return None
            with self._transition(session, row, RunStatus.INTERRUPTED, error=reason) as change:
                change.payload["error"] = reason
            return plan_record(row, with_document=True)

    def get_plan(self, plan_id: str) -> PlanRecord:
        """A plan with its document; raises `NotFoundError`."""
        with self._read() as session:
            return plan_record(plan_row(session, plan_id), with_document=True)

    def list_plans(
        self,
        *,
        repository: str | None = None,
        status: RunStatus | None = None,
        pull_request: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        before: str | None = None,
        with_documents: bool = False,
    ) -> Page[PlanRecord]:
        """Plans, newest first, `limit` per page; `before` is the previous page's
        `next_before`. Documents are left out unless `with_documents`."""
        query = select(PlanRow)
        if repository is not None:
            query = query.where(PlanRow.repository == repository)
        if status is not None:
            query = query.where(PlanRow.status == RunStatus(status).value)
        if pull_request is not None:
            query = query.where(PlanRow.pull_request == pull_request)
        with self._read() as session:
            rows = page_rows(session, query, PlanRow.id, limit, before)
            items = [plan_record(row, with_document=with_documents) for row in rows]
        return page(items, limit)

    def unfinished_plans(self) -> list[tuple[str, str | None]]:
        """(id, owner) of every pending or running plan, oldest first (for recovery)."""
        query = select(PlanRow.id, PlanRow.owner).where(PlanRow.status.in_(UNFINISHED))
        with self._read() as session:
            return [(i, o) for i, o in session.execute(query.order_by(PlanRow.id))]


def plan_row(session: Session, plan_id: str, *, for_update: bool = False) -> PlanRow:
    return run_row(session, PlanRow, "plan", plan_id, for_update=for_update)


def plan_record(row: PlanRow, *, with_document: bool) -> PlanRecord:
    return to_record(
        PlanRecord,
        row,
        status=RunStatus(row.status),
        trigger=Trigger(row.trigger),
        summary=dict(row.summary or {}),
        document=row.document if with_document else None,
    )
