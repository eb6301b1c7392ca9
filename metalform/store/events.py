"""The event log: append one event, read it after an id, wait for the next ones."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select

from metalform.store.core import StoreCore, clamp_limit, to_record
from metalform.store.ids import parse_id
from metalform.store.records import Event
from metalform.store.tables import EventRow
from reconciler.model.base import Address
from reconciler.model.events import EventType


class EventStore(StoreCore):
    """The append-only event log (plans, applies and actions append theirs themselves)."""

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
            return event_record(row)

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
        query = query.order_by(EventRow.id).limit(clamp_limit(limit))
        with self._read() as session:
            return [event_record(row) for row in session.scalars(query)]

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


def event_record(row: EventRow) -> Event:
    return to_record(Event, row, payload=dict(row.payload or {}))
