"""The in-process event bus."""

from __future__ import annotations

from typing import Any

from metalform.events import BusEvent, EventBus
from reconciler.model.events import EventType


class FakeLog:
    def __init__(self) -> None:
        self.appended: list[tuple[str, dict[str, Any]]] = []

    def append_event(self, type: str, **kw: Any) -> None:
        self.appended.append((type, kw))


def test_emit_reaches_subscribers_and_records_what_the_store_does_not() -> None:
    log = FakeLog()
    bus = EventBus(log)
    seen: list[BusEvent] = []
    drift_only: list[BusEvent] = []
    bus.subscribe(seen.append)
    bus.subscribe(drift_only.append, frozenset({EventType.DRIFT_DETECTED}))
    bus.emit(EventType.PLAN_CREATED, {"ref": "main"}, plan_id="p1")
    bus.emit(EventType.DRIFT_DETECTED, {"resources": 2}, repository="r")
    assert [e.type for e in seen] == [EventType.PLAN_CREATED, EventType.DRIFT_DETECTED]
    assert [e.type for e in drift_only] == [EventType.DRIFT_DETECTED]
    # plan.created is appended by the store with the plan itself; drift is appended here
    assert [t for t, _ in log.appended] == [EventType.DRIFT_DETECTED]
    assert log.appended[0][1]["repository"] == "r"


def test_a_failing_subscriber_does_not_break_the_emitter() -> None:
    bus = EventBus()
    seen: list[str] = []

    def broken(event: BusEvent) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.type))
    bus.emit(EventType.DRIFT_DETECTED)
    assert seen == [EventType.DRIFT_DETECTED]
    bus.unsubscribe(broken)
    bus.emit(EventType.DRIFT_DETECTED)
    assert seen == [EventType.DRIFT_DETECTED, EventType.DRIFT_DETECTED]
