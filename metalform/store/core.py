"""What every part of the store shares: the engine and its sessions, the clock, and the helpers
that each record type would otherwise write again (insert-if-absent, get-or-404, the status
transition of a plan or an apply, rows to records, pages).

Every method of the store is one short transaction and returns detached values. State changes
of plans, applies and actions append their event in the same transaction, so the event stream
never shows a change the database does not have (nor misses one it has).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from metalform.store import locks, migrate
from metalform.store.database import WRITE_OPTION, create_store_engine, normalize_url
from metalform.store.errors import ConflictError, NotFoundError, StoreError
from metalform.store.ids import parse_id
from metalform.store.records import Page, RunStatus
from metalform.store.tables import ApplyRow, Base, EventRow, PlanRow, RepositoryRow
from reconciler.model.base import Address
from reconciler.model.events import EventType

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
RowT = TypeVar("RowT", bound=Base)
RecordT = TypeVar("RecordT", bound="DataclassInstance")

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


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Transition:
    """A status change in progress: when it happens, and the payload of its event (the body
    of `StoreCore._transition` fills it)."""

    now: datetime
    payload: dict[str, Any] = field(default_factory=dict)


class StoreCore:
    """The engine, sessions and clock of a store, and the helpers its parts share."""

    def __init__(
        self,
        url: URL,
        engine: Engine,
        *,
        lock_lease_seconds: float = locks.DEFAULT_LEASE_SECONDS,
        clock: Callable[[], datetime] = utcnow,
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
        clock: Callable[[], datetime] = utcnow,
    ) -> Self:
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

    def __enter__(self) -> Self:
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

    # -- sessions and clock ----------------------------------------------------------------

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

    # -- shared writes ---------------------------------------------------------------------

    def _insert(self, table: type[Base], values: Mapping[str, Any]) -> Any:
        """An INSERT in the dialect's own form (for its ON CONFLICT clauses)."""
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table).values(dict(values))

    def _insert_ignore(
        self, session: Session, table: type[Base], values: Mapping[str, Any]
    ) -> bool:
        """INSERT unless the primary key exists (race-free, unlike SELECT then INSERT);
        True when a row was inserted."""
        return rowcount(session, self._insert(table, values).on_conflict_do_nothing()) == 1

    def _ensure_repository(self, session: Session, key: str) -> None:
        if not key:
            raise StoreError("repository key must not be empty")
        self._insert_ignore(session, RepositoryRow, {"key": key, "created_at": self._now()})

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

    @contextmanager
    def _transition(
        self, session: Session, row: PlanRow | ApplyRow, new: RunStatus, *, error: str | None = None
    ) -> Iterator[Transition]:
        """Move a plan or an apply to `new`, or raise `ConflictError` when it cannot go there.

        Stamps its times (`running`: started now; a final status: finished now, with its
        `error`), lets the body make its own changes and fill the event's payload, then appends
        the event (`plan.started`, `apply.failed`, ...) last, as `_append_event` wants.
        """
        what = "plan" if isinstance(row, PlanRow) else "apply"
        current = RunStatus(row.status)
        if new not in _ALLOWED_TRANSITIONS[current]:
            raise ConflictError(f"{what} {row.id} is {current.value}; it cannot become {new.value}")
        change = Transition(self._now())
        row.status = new.value
        if new is RunStatus.RUNNING:
            row.started_at = change.now
        else:
            row.error = error
            row.finished_at = change.now
            if new is not RunStatus.INTERRUPTED:
                # an interrupted record may never have started; the others ran, if briefly
                row.started_at = row.started_at or change.now
        yield change
        plan_id, apply_id = (row.id, None) if isinstance(row, PlanRow) else (row.plan_id, row.id)
        self._append_event(
            session,
            EventType(f"{what}.{'started' if new is RunStatus.RUNNING else new.value}"),
            repository=row.repository,
            plan_id=plan_id,
            apply_id=apply_id,
            payload=change.payload,
        )


# -- helpers of every record type ----------------------------------------------------------


def get_or_404(
    session: Session,
    table: type[RowT],
    key: Any,
    *,
    what: str,
    shown: str,
    for_update: bool = False,
) -> RowT:
    """The row of `table` with primary key `key`, or `NotFoundError` naming `what` `shown`
    (the id as the caller gave it). A None key (an id that does not parse) is not found."""
    row = None if key is None else session.get(table, key, with_for_update=for_update)
    if row is None:
        raise NotFoundError(what=what, id=shown)
    return row


def run_row(
    session: Session,
    table: type[RowT],
    what: str,
    run_id: str,
    *,
    for_update: bool = False,
) -> RowT:
    """A plan or an apply by the id a caller gave (any UUID spelling), or `NotFoundError`."""
    return get_or_404(
        session, table, parse_id(run_id), what=what, shown=run_id, for_update=for_update
    )


def to_record(record: type[RecordT], row: object, **converted: Any) -> RecordT:
    """The record `record` from `row`: fields named alike are copied, `converted` gives the
    others (enums, copies of JSON columns, values computed elsewhere)."""
    values = {f.name: getattr(row, f.name) for f in fields(record) if f.name not in converted}
    return record(**values, **converted)


def rowcount(session: Session, statement: Any) -> int:
    # Through the Core connection: the ORM's result has no row count. And psycopg reports the
    # count of an INSERT only while its cursor is open, which SQLAlchemy closes unless asked.
    result = session.connection().execute(statement, execution_options={"preserve_rowcount": True})
    return result.rowcount


def aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise StoreError("naive datetime given to the store; give an aware (UTC) one")
    return value


def clamp_limit(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))


def page_rows(
    session: Session, query: Any, id_column: Any, limit: int, before: str | None
) -> list[Any]:
    """One page of rows, newest id first, plus one more when there is a next page."""
    limit = clamp_limit(limit)
    if before is not None:
        canonical = parse_id(before)
        if canonical is None:
            raise StoreError(f"invalid page cursor {before!r}")
        query = query.where(id_column < canonical)
    return list(session.scalars(query.order_by(id_column.desc()).limit(limit + 1)))


def page(items: list[T], limit: int) -> Page[T]:
    """The page of `items` (as `page_rows` cut them), with the cursor of the next one."""
    limit = clamp_limit(limit)
    if len(items) <= limit:
        return Page(items)
    items = items[:limit]
    return Page(items, getattr(items[-1], "id", None))


def chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
