"""The state store: plans, applies, action results, events, webhook deliveries, resource status.

One `Store` per process, shared by its threads. Every method is one short transaction; the
records it returns are detached values. State changes of plans, applies and actions append
their event in the same transaction, so the event stream never shows a change the database
does not have (nor misses one it has).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Engine, and_, delete, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from metalform.store import locks, migrate
from metalform.store.database import WRITE_OPTION, create_store_engine, normalize_url
from metalform.store.errors import ConflictError, NotFoundError, StoreError
from metalform.store.ids import new_id, parse_id
from metalform.store.records import (
    ActionResult,
    ApplyRecord,
    Delivery,
    Event,
    Page,
    PlanRecord,
    RepositoryStatus,
    ResourceStatus,
    ResourceStatusUpdate,
    RunStatus,
    Trigger,
)
from metalform.store.tables import (
    ApplyActionRow,
    ApplyRow,
    Base,
    EventRow,
    PlanRow,
    PullRequestCommentRow,
    RepositoryRow,
    ResourceLabelRow,
    ResourceStatusRow,
    WebhookDeliveryRow,
)
from reconciler.model.base import Address, Health, SyncStatus
from reconciler.model.events import EventType
from reconciler.model.plan import ActionStatus, Plan

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 500
_EVENT_LOG_LOCK = "metalform:events"
_ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset(
        {RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED}
    ),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED}),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.INTERRUPTED: frozenset(),
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _split_address(address: Address) -> tuple[str, str]:
    kind, sep, name = address.partition("/")
    if not sep or not kind or not name:
        raise StoreError(f"invalid address {address!r}: expected Kind/name")
    return kind, name


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise StoreError("naive datetime given to the store; give an aware (UTC) one")
    return value


def _clamp_limit(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))


class Store:
    """Persistence for the server and the CLI, on SQLite or PostgreSQL.

    Open with `Store.open(url)`; close with `close()` or a `with` block.
    """

    def __init__(
        self,
        url: URL,
        engine: Engine,
        *,
        lock_lease_seconds: float = locks.DEFAULT_LEASE_SECONDS,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.url = url
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._lock_engine: Engine | None = None
        self._lock_engine_guard = threading.Lock()
        self._lock_lease = lock_lease_seconds
        self._clock = clock

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        migrate_to_head: bool = True,
        lock_lease_seconds: float = locks.DEFAULT_LEASE_SECONDS,
        clock: Callable[[], datetime] = _utcnow,
    ) -> Store:
        """Connect to `sqlite:///PATH` or `postgresql://...` and migrate the schema to head.

        SQLite runs in WAL mode with a busy timeout, so the threads of a server (and other
        processes) can share the file. `lock_lease_seconds` is how long a crashed holder of an
        SQLite lock blocks the others. `clock` returns aware UTC datetimes (tests pin it).
        """
        parsed = normalize_url(url)
        engine = create_store_engine(parsed)
        store = cls(parsed, engine, lock_lease_seconds=lock_lease_seconds, clock=clock)
        if migrate_to_head:
            try:
                migrate.upgrade(engine)
            except BaseException:
                store.close()
                raise
        return store

    def close(self) -> None:
        """Close every pooled connection. Locks still held are not released here."""
        self._engine.dispose()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None: not migrated)."""
        return migrate.current_revision(self._engine)

    def ping(self) -> None:
        """Raise when the database cannot be reached (for readiness probes)."""
        with self._read() as session:
            session.execute(select(1))

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise StoreError("the store's clock must return aware datetimes")
        return now.astimezone(UTC)

    # -- repositories ----------------------------------------------------------------------

    def _insert_ignore(
        self, session: Session, table: type[Base], values: Mapping[str, Any]
    ) -> bool:
        """INSERT unless the primary key exists (race-free, unlike SELECT then INSERT);
        True when a row was inserted."""
        stmt: Any
        if self.dialect == "postgresql":
            stmt = postgresql.insert(table).values(dict(values)).on_conflict_do_nothing()
        else:
            stmt = sqlite.insert(table).values(dict(values)).on_conflict_do_nothing()
        return _rowcount(session, stmt) == 1

    def _ensure_repository(self, session: Session, key: str) -> None:
        if not key:
            raise StoreError("repository key must not be empty")
        self._insert_ignore(session, RepositoryRow, {"key": key, "created_at": self._now()})

    def repository_status(self, repository: str) -> RepositoryStatus | None:
        """What was last planned and applied for `repository`, and its resource counts."""
        with self._read() as session:
            row = session.get(RepositoryRow, repository)
            if row is None:
                return None
            return self._repository_status(session, row)

    def list_repositories(self) -> list[RepositoryStatus]:
        """Every repository the store has seen, by key."""
        with self._read() as session:
            rows = session.scalars(select(RepositoryRow).order_by(RepositoryRow.key)).all()
            return [self._repository_status(session, row) for row in rows]

    def _repository_status(self, session: Session, row: RepositoryRow) -> RepositoryStatus:
        def counts(column: Any) -> dict[str, int]:
            query = (
                select(column, func.count())
                .where(ResourceStatusRow.repository == row.key)
                .group_by(column)
            )
            return {str(value): int(n) for value, n in session.execute(query)}

        by_kind = counts(ResourceStatusRow.kind)
        by_sync = counts(ResourceStatusRow.sync)
        return RepositoryStatus(
            key=row.key,
            last_planned_revision=row.last_planned_revision,
            last_planned_at=row.last_planned_at,
            last_plan_id=row.last_plan_id,
            last_applied_revision=row.last_applied_revision,
            last_applied_at=row.last_applied_at,
            last_apply_id=row.last_apply_id,
            resources=sum(by_kind.values()),
            drift=by_sync.get(SyncStatus.OUT_OF_SYNC.value, 0),
            by_kind=by_kind,
            by_sync=by_sync,
            by_health=counts(ResourceStatusRow.health),
        )

    # -- events ----------------------------------------------------------------------------

    def _append_event(
        self,
        session: Session,
        type: EventType | str,
        *,
        repository: str | None = None,
        plan_id: str | None = None,
        apply_id: str | None = None,
        address: Address | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> EventRow:
        if self.dialect == "postgresql":
            # Readers follow the log by id ("after N"). Sequence values are handed out at
            # insert but become visible at commit, so without this lock a reader could see
            # id 8 before id 7 commits and skip 7 for good. Holding one lock from taking an id
            # to commit makes ids visible in order. Callers append events last, so it is held
            # only for the commit.
            session.execute(select(func.pg_advisory_xact_lock(locks.advisory_key(_EVENT_LOG_LOCK))))
        row = EventRow(
            at=self._now(),
            type=type.value if isinstance(type, EventType) else type,
            repository=repository,
            plan_id=plan_id,
            apply_id=apply_id,
            address=address,
            payload=dict(payload or {}),
        )
        session.add(row)
        session.flush()
        return row

    def append_event(
        self,
        type: EventType | str,
        *,
        repository: str | None = None,
        plan_id: str | None = None,
        apply_id: str | None = None,
        address: Address | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append one event (e.g. `drift.detected`, `webhook.rejected`) to the log.

        Plan, apply and action changes made through this store append their own events.
        `payload` must be JSON-able and must not hold secrets.
        """
        with self._write() as session:
            row = self._append_event(
                session,
                type,
                repository=repository,
                plan_id=plan_id,
                apply_id=apply_id,
                address=address,
                payload=payload,
            )
            return _event(row)

    def list_events(
        self,
        after: int = 0,
        *,
        limit: int = 100,
        repository: str | None = None,
        plan_id: str | None = None,
        apply_id: str | None = None,
        types: Iterable[EventType | str] | None = None,
    ) -> list[Event]:
        """Events with an id greater than `after`, oldest first (to follow the log, pass the
        id of the last event seen)."""
        query = select(EventRow).where(EventRow.id > after)
        if repository is not None:
            query = query.where(EventRow.repository == repository)
        if plan_id is not None:
            plan_id = parse_id(plan_id)
            if plan_id is None:
                return []
            query = query.where(EventRow.plan_id == plan_id)
        if apply_id is not None:
            apply_id = parse_id(apply_id)
            if apply_id is None:
                return []
            query = query.where(EventRow.apply_id == apply_id)
        if types is not None:
            names = [t.value if isinstance(t, EventType) else t for t in types]
            query = query.where(EventRow.type.in_(names))
        query = query.order_by(EventRow.id).limit(_clamp_limit(limit))
        with self._read() as session:
            return [_event(row) for row in session.scalars(query)]

    def wait_for_events(
        self,
        after: int,
        *,
        timeout_seconds: float,
        poll_seconds: float = 0.5,
        limit: int = 100,
        repository: str | None = None,
        plan_id: str | None = None,
        apply_id: str | None = None,
    ) -> list[Event]:
        """Like `list_events`, but wait up to `timeout_seconds` for at least one (an SSE
        stream's loop); an empty list when none came. Polls: the same on both databases and
        across replicas."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            events = self.list_events(
                after,
                limit=limit,
                repository=repository,
                plan_id=plan_id,
                apply_id=apply_id,
            )
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            time.sleep(min(poll_seconds, remaining))

    def last_event_id(self) -> int:
        """The id of the newest event, 0 when there is none (where a new stream starts)."""
        with self._read() as session:
            return int(session.scalar(select(func.coalesce(func.max(EventRow.id), 0))) or 0)

    # -- plans -----------------------------------------------------------------------------

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
            return _plan(row, with_document=False)

    def _plan_row(self, session: Session, plan_id: str, *, for_update: bool = False) -> PlanRow:
        canonical = parse_id(plan_id)
        row = None
        if canonical is not None:
            query = select(PlanRow).where(PlanRow.id == canonical)
            if for_update:
                query = query.with_for_update()
            row = session.scalars(query).first()
        if row is None:
            raise NotFoundError(what="plan", id=plan_id)
        return row

    @staticmethod
    def _transition(what: str, row: PlanRow | ApplyRow, new: RunStatus) -> None:
        current = RunStatus(row.status)
        if new not in _ALLOWED_TRANSITIONS[current]:
            raise ConflictError(f"{what} {row.id} is {current.value}; it cannot become {new.value}")
        row.status = new.value

    def start_plan(self, plan_id: str) -> PlanRecord:
        """Mark a planning job `running`. Appends `plan.started`."""
        with self._write() as session:
            row = self._plan_row(session, plan_id, for_update=True)
            self._transition("plan", row, RunStatus.RUNNING)
            row.started_at = self._now()
            self._append_event(
                session, EventType.PLAN_STARTED, repository=row.repository, plan_id=row.id
            )
            return _plan(row, with_document=False)

    def finish_plan(self, plan_id: str, plan: Plan) -> PlanRecord:
        """Store the plan a job made and mark it `succeeded`. Appends `plan.succeeded`.

        The repository's last planned revision moves to the plan's revision, unless the plan
        is for a pull request.
        """
        document = plan.model_dump(mode="json", by_alias=True)
        summary = plan.summary.model_dump(mode="json", by_alias=True)
        with self._write() as session:
            row = self._plan_row(session, plan_id, for_update=True)
            self._transition("plan", row, RunStatus.SUCCEEDED)
            now = self._now()
            row.document = document
            row.revision = plan.revision
            row.summary = summary
            row.action_count = len(plan.actions)
            row.diagnostics_count = len(plan.diagnostics)
            row.started_at = row.started_at or now
            row.finished_at = now
            if row.pull_request is None:
                session.execute(
                    update(RepositoryRow)
                    .where(RepositoryRow.key == row.repository)
                    .values(
                        last_planned_revision=plan.revision,
                        last_planned_at=now,
                        last_plan_id=row.id,
                    )
                )
            self._append_event(
                session,
                EventType.PLAN_SUCCEEDED,
                repository=row.repository,
                plan_id=row.id,
                payload={
                    "revision": plan.revision,
                    "summary": summary,
                    "actions": row.action_count,
                    "diagnostics": row.diagnostics_count,
                },
            )
            return _plan(row, with_document=True)

    def fail_plan(self, plan_id: str, error: str) -> PlanRecord:
        """Mark a planning job `failed` with its error message. Appends `plan.failed`."""
        with self._write() as session:
            row = self._plan_row(session, plan_id, for_update=True)
            self._transition("plan", row, RunStatus.FAILED)
            now = self._now()
            row.error = error
            row.started_at = row.started_at or now
            row.finished_at = now
            self._append_event(
                session,
                EventType.PLAN_FAILED,
                repository=row.repository,
                plan_id=row.id,
                payload={"error": error},
            )
            return _plan(row, with_document=True)

    def get_plan(self, plan_id: str) -> PlanRecord:
        """A plan with its document; raises `NotFoundError`."""
        with self._read() as session:
            return _plan(self._plan_row(session, plan_id), with_document=True)

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
            rows = _page_rows(session, query, PlanRow.id, limit, before)
            items = [_plan(row, with_document=with_documents) for row in rows]
        return _page(items, limit)

    # -- applies ---------------------------------------------------------------------------

    def _apply_row(self, session: Session, apply_id: str, *, for_update: bool = False) -> ApplyRow:
        canonical = parse_id(apply_id)
        row = None
        if canonical is not None:
            query = select(ApplyRow).where(ApplyRow.id == canonical)
            if for_update:
                query = query.with_for_update()
            row = session.scalars(query).first()
        if row is None:
            raise NotFoundError(what="apply", id=apply_id)
        return row

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
            plan_row = self._plan_row(session, plan_id)
            if plan_row.status != RunStatus.SUCCEEDED.value or plan_row.document is None:
                raise ConflictError(
                    f"plan {plan_row.id} is {plan_row.status}; only a succeeded plan can be applied"
                )
            plan = Plan.model_validate(plan_row.document)
            row = ApplyRow(
                id=new_id(),
                plan_id=plan_row.id,
                repository=plan_row.repository,
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
            return self._apply(session, row, with_actions=True)

    def start_apply(self, apply_id: str) -> ApplyRecord:
        """Mark an apply `running`. Appends `apply.started`."""
        with self._write() as session:
            row = self._apply_row(session, apply_id, for_update=True)
            self._transition("apply", row, RunStatus.RUNNING)
            row.started_at = self._now()
            self._append_event(
                session,
                EventType.APPLY_STARTED,
                repository=row.repository,
                plan_id=row.plan_id,
                apply_id=row.id,
            )
            return self._apply(session, row, with_actions=False)

    def finish_apply(self, apply_id: str, *, error: str | None = None) -> ApplyRecord:
        """Mark an apply `succeeded`, or `failed` when `error` is given.

        On success the repository's last applied revision moves to the plan's revision.
        Appends `apply.succeeded` or `apply.failed`.
        """
        status = RunStatus.SUCCEEDED if error is None else RunStatus.FAILED
        with self._write() as session:
            row = self._apply_row(session, apply_id, for_update=True)
            self._transition("apply", row, status)
            now = self._now()
            row.error = error
            row.started_at = row.started_at or now
            row.finished_at = now
            if status is RunStatus.SUCCEEDED:
                session.execute(
                    update(RepositoryRow)
                    .where(RepositoryRow.key == row.repository)
                    .values(
                        last_applied_revision=row.revision,
                        last_applied_at=now,
                        last_apply_id=row.id,
                    )
                )
            record = self._apply(session, row, with_actions=False)
            self._append_event(
                session,
                EventType.APPLY_SUCCEEDED if error is None else EventType.APPLY_FAILED,
                repository=row.repository,
                plan_id=row.plan_id,
                apply_id=row.id,
                payload={"error": error, "counts": record.counts},
            )
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
            apply_row = self._apply_row(session, apply_id)
            if RunStatus(apply_row.status).terminal:
                raise ConflictError(f"apply {apply_row.id} is {apply_row.status}; it is over")
            row = session.get(ApplyActionRow, (apply_row.id, action_id), with_for_update=True)
            if row is None:
                raise NotFoundError(what="action", id=f"{action_id} of apply {apply_id}")
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
            result = _action(row)
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

    def get_apply(self, apply_id: str) -> ApplyRecord:
        """An apply with every action's progress; raises `NotFoundError`."""
        with self._read() as session:
            return self._apply(session, self._apply_row(session, apply_id), with_actions=True)

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
            rows = _page_rows(session, query, ApplyRow.id, limit, before)
            counts = self._action_counts(session, [row.id for row in rows])
            items = [_apply(row, counts.get(row.id, {}), ()) for row in rows]
        return _page(items, limit)

    def list_history(
        self,
        *,
        repository: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        before: str | None = None,
    ) -> Page[PlanRecord | ApplyRecord]:
        """Plans and applies together, newest first (ids of both sort by creation time)."""
        plans = self.list_plans(repository=repository, limit=limit, before=before)
        applies = self.list_applies(repository=repository, limit=limit, before=before)
        merged: list[PlanRecord | ApplyRecord] = [*plans.items, *applies.items]
        merged.sort(key=lambda record: record.id, reverse=True)
        items = merged[: _clamp_limit(limit)]
        more = len(merged) > len(items) or plans.next_before is not None
        more = more or applies.next_before is not None
        return Page(items, items[-1].id if more and items else None)

    def _action_counts(
        self, session: Session, apply_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
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

    def _apply(self, session: Session, row: ApplyRow, *, with_actions: bool) -> ApplyRecord:
        actions: tuple[ActionResult, ...] = ()
        if with_actions:
            query = (
                select(ApplyActionRow)
                .where(ApplyActionRow.apply_id == row.id)
                .order_by(ApplyActionRow.action_id)
            )
            actions = tuple(_action(a) for a in session.scalars(query))
        counts = self._action_counts(session, [row.id]).get(row.id, {})
        return _apply(row, counts, actions)

    # -- webhook deliveries ----------------------------------------------------------------

    def record_delivery(
        self, forge: str, delivery_id: str, *, event: str, result: str = "accepted"
    ) -> bool:
        """Remember a webhook delivery; False when this forge sent this delivery id before
        (a redelivery, to be acknowledged and ignored)."""
        values = {
            "forge": forge,
            "delivery_id": delivery_id,
            "event": event,
            "received_at": self._now(),
            "result": result,
        }
        with self._write() as session:
            return self._insert_ignore(session, WebhookDeliveryRow, values)

    def set_delivery_result(self, forge: str, delivery_id: str, result: str) -> None:
        """Record what came of a delivery (`planned`, `ignored: ...`, `failed: ...`)."""
        with self._write() as session:
            row = session.get(WebhookDeliveryRow, (forge, delivery_id))
            if row is None:
                raise NotFoundError(what="delivery", id=f"{forge}/{delivery_id}")
            row.result = result

    def get_delivery(self, forge: str, delivery_id: str) -> Delivery | None:
        """A recorded delivery, or None."""
        with self._read() as session:
            row = session.get(WebhookDeliveryRow, (forge, delivery_id))
            if row is None:
                return None
            return Delivery(
                forge=row.forge,
                delivery_id=row.delivery_id,
                event=row.event,
                received_at=row.received_at,
                result=row.result,
            )

    def prune_deliveries(self, older_than: datetime) -> int:
        """Forget deliveries received before `older_than` (forges redeliver for days, not
        forever); returns how many."""
        with self._write() as session:
            return _rowcount(
                session,
                delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.received_at < _aware(older_than)
                ),
            )

    # -- resource status -------------------------------------------------------------------

    def _upsert_resource(
        self, session: Session, repository: str, change: ResourceStatusUpdate
    ) -> ResourceStatusRow:
        kind, name = _split_address(change.address)
        now = self._now()
        self._ensure_repository(session, repository)
        # insert-if-absent, then lock and update: two writers of a new resource cannot collide
        self._insert_ignore(
            session,
            ResourceStatusRow,
            {
                "repository": repository,
                "address": change.address,
                "kind": kind,
                "name": name,
                "labels": {},
                "sync": SyncStatus.UNKNOWN.value,
                "health": Health.UNKNOWN.value,
                "updated_at": now,
            },
        )
        row = session.get(
            ResourceStatusRow,
            (repository, change.address),
            with_for_update=True,
            populate_existing=True,
        )
        assert row is not None
        if change.sync is not None:
            row.sync = SyncStatus(change.sync).value
        if change.health is not None:
            row.health = Health(change.health).value
        if change.message is not None:
            row.message = change.message or None
        if change.last_action is not None:
            row.last_action = change.last_action
        if change.last_result is not None:
            row.last_result = ActionStatus(change.last_result).value
        if change.last_action_at is not None:
            row.last_action_at = _aware(change.last_action_at)
        row.updated_at = now
        session.flush()
        if change.labels is not None and change.labels != row.labels:
            row.labels = dict(change.labels)
            session.execute(
                delete(ResourceLabelRow).where(
                    ResourceLabelRow.repository == repository,
                    ResourceLabelRow.address == change.address,
                )
            )
            session.add_all(
                ResourceLabelRow(repository=repository, address=change.address, key=k, value=v)
                for k, v in change.labels.items()
            )
            session.flush()
        return row

    def upsert_resource_status(
        self, repository: str, change: ResourceStatusUpdate
    ) -> ResourceStatus:
        """Create or update one resource's status; fields of `change` left None are kept."""
        with self._write() as session:
            return _resource(self._upsert_resource(session, repository, change))

    def upsert_resource_statuses(
        self,
        repository: str,
        changes: Iterable[ResourceStatusUpdate],
        *,
        prune: bool = False,
    ) -> int:
        """Apply many changes in one transaction (after a plan or a drift check). With
        `prune`, resources of `repository` not among `changes` are forgotten (gone from Git).
        Returns how many resources were written."""
        with self._write() as session:
            seen: set[str] = set()
            for change in changes:
                self._upsert_resource(session, repository, change)
                seen.add(change.address)
            if prune:
                stale = select(ResourceStatusRow.address).where(
                    ResourceStatusRow.repository == repository
                )
                gone = [a for a in session.scalars(stale) if a not in seen]
                for chunk in _chunks(gone, 500):
                    # labels go by ON DELETE CASCADE
                    session.execute(
                        delete(ResourceStatusRow).where(
                            ResourceStatusRow.repository == repository,
                            ResourceStatusRow.address.in_(chunk),
                        )
                    )
            return len(seen)

    def get_resource_status(self, repository: str, address: Address) -> ResourceStatus | None:
        """One resource's status, or None when the store has none."""
        with self._read() as session:
            row = session.get(ResourceStatusRow, (repository, address))
            return None if row is None else _resource(row)

    def list_resource_status(
        self,
        repository: str | None = None,
        *,
        kind: str | None = None,
        labels: Mapping[str, str | None] | None = None,
        sync: SyncStatus | Iterable[SyncStatus] | None = None,
        health: Health | Iterable[Health] | None = None,
    ) -> list[ResourceStatus]:
        """Resources by address, filtered: all `labels` must match (a None value: the label is
        present with any value); `sync` and `health` take one value or several."""
        query = select(ResourceStatusRow)
        if repository is not None:
            query = query.where(ResourceStatusRow.repository == repository)
        if kind is not None:
            query = query.where(ResourceStatusRow.kind == kind)
        for key, value in (labels or {}).items():
            match = and_(
                ResourceLabelRow.repository == ResourceStatusRow.repository,
                ResourceLabelRow.address == ResourceStatusRow.address,
                ResourceLabelRow.key == key,
            )
            if value is not None:
                match = and_(match, ResourceLabelRow.value == value)
            query = query.where(exists().where(match))
        if sync is not None:
            syncs = [sync] if isinstance(sync, SyncStatus) else list(sync)
            query = query.where(ResourceStatusRow.sync.in_([SyncStatus(s).value for s in syncs]))
        if health is not None:
            healths = [health] if isinstance(health, Health) else list(health)
            query = query.where(ResourceStatusRow.health.in_([Health(h).value for h in healths]))
        query = query.order_by(ResourceStatusRow.repository, ResourceStatusRow.address)
        with self._read() as session:
            return [_resource(row) for row in session.scalars(query)]

    def delete_resource_status(self, repository: str, address: Address) -> bool:
        """Forget one resource's status; False when there was none."""
        with self._write() as session:
            row = session.get(ResourceStatusRow, (repository, address))
            if row is None:
                return False
            session.delete(row)
            session.flush()
            # SQLite enforces the cascade only with foreign keys on; do not rely on it here
            session.execute(
                delete(ResourceLabelRow).where(
                    ResourceLabelRow.repository == repository,
                    ResourceLabelRow.address == address,
                )
            )
            return True

    # -- pull request comments -------------------------------------------------------------

    def get_pr_comment(self, forge: str, repo: str, number: int) -> str | None:
        """The id of the comment Metalform posted on this pull request, if any."""
        with self._read() as session:
            row = session.get(PullRequestCommentRow, (forge, repo, number))
            return None if row is None else row.comment_id

    def set_pr_comment(self, forge: str, repo: str, number: int, comment_id: str) -> None:
        """Remember the comment Metalform posted, to edit it in place on the next plan."""
        values = {
            "forge": forge,
            "repo": repo,
            "number": number,
            "comment_id": comment_id,
            "updated_at": self._now(),
        }
        table = PullRequestCommentRow
        keys = ["forge", "repo", "number"]
        changed = {"comment_id": comment_id, "updated_at": values["updated_at"]}
        stmt: Any
        if self.dialect == "postgresql":
            stmt = postgresql.insert(table).values(values)
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=changed)
        else:
            stmt = sqlite.insert(table).values(values)
            stmt = stmt.on_conflict_do_update(index_elements=keys, set_=changed)
        with self._write() as session:
            session.execute(stmt)

    # -- locks -----------------------------------------------------------------------------

    def try_lock(self, name: str, *, owner: str | None = None) -> locks.Lock | None:
        """Take the named lock for this process, or None while another holder has it.

        The lock holds across processes and hosts sharing the database until `release()`;
        a holder that dies frees it (PostgreSQL: with its connection; SQLite: at once when
        it was a process of this host, else after the lease). Not re-entrant: a second
        `try_lock` of a held name returns None. `owner` (default: a new one) must come from
        `locks.new_owner()`.
        """
        owner = owner or locks.new_owner()
        if self.dialect == "postgresql":
            with self._lock_engine_guard:
                if self._lock_engine is None:
                    # one connection per held lock, outside the pool: closing it must really
                    # disconnect, and a long apply must not keep a pooled connection from others
                    self._lock_engine = create_store_engine(self.url, pool=False)
                engine = self._lock_engine
            return locks.try_advisory_lock(engine, name, owner, self._lock_lease / 3)
        return locks.try_lease_lock(self._engine, name, owner, self._lock_lease)

    @contextmanager
    def lock(self, name: str, *, wait_seconds: float = 0.0) -> Iterator[locks.Lock | None]:
        """`with store.lock(name) as held:` held is the lock (truthy) or None (not acquired);
        waits up to `wait_seconds` for it. Released when the block ends."""
        held = locks.wait_for(lambda: self.try_lock(name), wait_seconds)
        try:
            yield held
        finally:
            if held is not None:
                held.release()

    def try_apply_lock(self, repository: str) -> locks.Lock | None:
        """Take the apply lock of `repository` (to hand it to a worker thread), or None."""
        return self.try_lock(apply_lock_name(repository))

    @contextmanager
    def apply_lock(
        self, repository: str, *, wait_seconds: float = 0.0
    ) -> Iterator[locks.Lock | None]:
        """One apply at a time per repository, across threads, processes and replicas:
        `with store.apply_lock(repo) as acquired: if not acquired: ... 409`."""
        with self.lock(apply_lock_name(repository), wait_seconds=wait_seconds) as held:
            yield held


def apply_lock_name(repository: str) -> str:
    """The lock name guarding applies of `repository`."""
    return f"apply:{repository}"


# -- conversions ---------------------------------------------------------------------------


def _rowcount(session: Session, statement: Any) -> int:
    # Through the Core connection: the ORM's result has no row count. And psycopg reports the
    # count of an INSERT only while its cursor is open, which SQLAlchemy closes unless asked.
    result = session.connection().execute(statement, execution_options={"preserve_rowcount": True})
    return result.rowcount


def _page_rows(
    session: Session, query: Any, id_column: Any, limit: int, before: str | None
) -> list[Any]:
    limit = _clamp_limit(limit)
    if before is not None:
        canonical = parse_id(before)
        if canonical is None:
            raise StoreError(f"invalid page cursor {before!r}")
        query = query.where(id_column < canonical)
    # one extra row tells whether there is a next page
    return list(session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))


def _page(items: list[T], limit: int) -> Page[T]:
    limit = _clamp_limit(limit)
    if len(items) <= limit:
        return Page(items)
    items = items[:limit]
    return Page(items, getattr(items[-1], "id", None))


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _plan(row: PlanRow, *, with_document: bool) -> PlanRecord:
    return PlanRecord(
        id=row.id,
        repository=row.repository,
        status=RunStatus(row.status),
        trigger=Trigger(row.trigger),
        who=row.who,
        ref=row.ref,
        revision=row.revision,
        pull_request=row.pull_request,
        summary=dict(row.summary or {}),
        action_count=row.action_count,
        diagnostics_count=row.diagnostics_count,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        document=row.document if with_document else None,
        owner=row.owner,
    )


def _apply(row: ApplyRow, counts: dict[str, int], actions: tuple[ActionResult, ...]) -> ApplyRecord:
    return ApplyRecord(
        id=row.id,
        plan_id=row.plan_id,
        repository=row.repository,
        status=RunStatus(row.status),
        trigger=Trigger(row.trigger),
        who=row.who,
        revision=row.revision,
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        owner=row.owner,
        counts=counts,
        actions=actions,
    )


def _action(row: ApplyActionRow) -> ActionResult:
    return ActionResult(
        apply_id=row.apply_id,
        action_id=row.action_id,
        address=row.address,
        operation=row.operation,
        status=ActionStatus(row.status),
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_seconds=row.duration_seconds,
        error=row.error,
    )


def _event(row: EventRow) -> Event:
    return Event(
        id=row.id,
        at=row.at,
        type=row.type,
        repository=row.repository,
        plan_id=row.plan_id,
        apply_id=row.apply_id,
        address=row.address,
        payload=dict(row.payload or {}),
    )


def _resource(row: ResourceStatusRow) -> ResourceStatus:
    return ResourceStatus(
        repository=row.repository,
        address=row.address,
        kind=row.kind,
        name=row.name,
        labels=dict(row.labels or {}),
        sync=SyncStatus(row.sync),
        health=Health(row.health),
        message=row.message,
        last_action=row.last_action,
        last_result=ActionStatus(row.last_result) if row.last_result else None,
        last_action_at=row.last_action_at,
        updated_at=row.updated_at,
    )
