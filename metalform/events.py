"""A small in-process event bus: `emit(type, payload)` reaches every subscriber.

The state store is the durable log: events the store does not write itself (drift, rejected
webhooks) are appended to it here, so the API's event streams and history see them. Plan and
apply transitions are appended by the store in the same transaction as the change; for those
the bus only notifies. Subscribers (notifications, metrics) run in the emitting thread and must
be quick; one that raises is logged and never breaks the emitter.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from reconciler.model.events import EventType

log = logging.getLogger("metalform.events")

STORE_WRITTEN = frozenset(
    {
        EventType.PLAN_CREATED,
        EventType.PLAN_FAILED,
        EventType.APPLY_STARTED,
        EventType.APPLY_SUCCEEDED,
        EventType.APPLY_FAILED,
        EventType.PLAN_INTERRUPTED,
        EventType.APPLY_INTERRUPTED,
    }
)
"""Types the store appends itself, with the state change they describe."""


class EventLog(Protocol):
    """The part of the store the bus writes to."""

    def append_event(
        self,
        type: str,
        *,
        repository: str | None = None,
        plan_id: str | None = None,
        apply_id: str | None = None,
        address: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class BusEvent:
    """What subscribers receive. `payload` is JSON-able and holds no secret."""

    type: str
    payload: Mapping[str, Any]
    repository: str | None = None
    plan_id: str | None = None
    apply_id: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Subscriber = Callable[[BusEvent], None]


class EventBus:
    """Fan-out of server events to subscribers, recording in `log` what the store does not."""

    def __init__(self, log_to: EventLog | None = None) -> None:
        self._log = log_to
        self._subscribers: list[tuple[frozenset[str] | None, Subscriber]] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber, types: frozenset[str] | None = None) -> None:
        """Call `subscriber` for every event (or only those of `types`)."""
        with self._lock:
            self._subscribers.append((types, subscriber))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers = [(t, s) for t, s in self._subscribers if s is not subscriber]

    def emit(
        self,
        type: str,
        payload: Mapping[str, Any] | None = None,
        *,
        repository: str | None = None,
        plan_id: str | None = None,
        apply_id: str | None = None,
    ) -> BusEvent:
        """Record (unless the store already did) and deliver one event."""
        event = BusEvent(type, dict(payload or {}), repository, plan_id, apply_id)
        if self._log is not None and type not in STORE_WRITTEN:
            try:
                self._log.append_event(
                    type,
                    repository=repository,
                    plan_id=plan_id,
                    apply_id=apply_id,
                    payload=event.payload,
                )
            except Exception:  # the log is best effort for these; the caller's work is not
                log.warning("could not record event %s", type, exc_info=True)
        with self._lock:
            subscribers = list(self._subscribers)
        for types, subscriber in subscribers:
            if types is not None and type not in types:
                continue
            try:
                subscriber(event)
            except Exception:
                log.warning("event subscriber failed on %s", type, exc_info=True)
        return event
