"""What a notification is about: one event, with the resources it touches.

The server's event bus (`metalform.events.BusEvent`) carries thin, JSON-able payloads. Rules
match on the kinds and labels of the resources an event touches, so `Event.from_bus` enriches
a bus event with the labels the desired state declares for its addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from reconciler.model.base import Severity
from reconciler.model.events import EventType
from reconciler.model.plan import Plan

SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}

DEFAULT_SEVERITY = {
    EventType.PLAN_CREATED: Severity.INFO,
    EventType.PLAN_FAILED: Severity.ERROR,
    EventType.APPLY_STARTED: Severity.INFO,
    EventType.APPLY_SUCCEEDED: Severity.INFO,
    EventType.APPLY_FAILED: Severity.ERROR,
    EventType.DRIFT_DETECTED: Severity.WARNING,
    EventType.WEBHOOK_REJECTED: Severity.WARNING,
    EventType.CREDENTIAL_ROTATED: Severity.INFO,
}
"""How serious an event is when its emitter does not say."""


@dataclass(frozen=True)
class EventResource:
    """A resource an event touches: enough to match a rule's `kinds` and `labels`."""

    address: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.address.split("/", 1)[0]


@dataclass(frozen=True)
class Event:
    """One thing that happened, as notifications see it.

    `summary` holds counts (a plan's create/update/delete/..., an apply's succeeded/failed/...),
    `message` one line for people, `results` the apply results (address, operation, status,
    error), `diagnostics` the plan's diagnostics (severity, address, message). No field may
    hold a secret; rendering redacts known secrets anyway.
    """

    type: EventType
    time: datetime = field(default_factory=lambda: datetime.now(UTC))
    repository: str | None = None
    revision: str | None = None
    plan_id: str | None = None
    apply_id: str | None = None
    resources: tuple[EventResource, ...] = ()
    severity: Severity | None = None
    message: str = ""
    summary: Mapping[str, int] = field(default_factory=dict)
    diagnostics: Sequence[Mapping[str, Any]] = ()
    results: Sequence[Mapping[str, Any]] = ()
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def effective_severity(self) -> Severity:
        return self.severity if self.severity is not None else DEFAULT_SEVERITY[self.type]

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.resources]

    @property
    def kinds(self) -> list[str]:
        return sorted({r.kind for r in self.resources})

    def context(self) -> dict[str, Any]:
        """The `event` variable of a template: plain data only."""
        return {
            "type": self.type.value,
            "time": self.time.isoformat(timespec="seconds"),
            "repository": self.repository or "",
            "revision": self.revision or "",
            "plan_id": self.plan_id or "",
            "apply_id": self.apply_id or "",
            "severity": self.effective_severity.value,
            "message": self.message,
            "summary": dict(self.summary),
            "addresses": self.addresses,
            "kinds": self.kinds,
            "resources": [
                {"address": r.address, "kind": r.kind, "labels": dict(r.labels)}
                for r in self.resources
            ],
            "diagnostics": [dict(d) for d in self.diagnostics],
            "results": [dict(r) for r in self.results],
            "payload": dict(self.payload),
        }

    @classmethod
    def from_bus(
        cls, bus_event: BusEventLike, labels_of: Mapping[str, Mapping[str, str]] | None = None
    ) -> Event:
        """An Event from a `metalform.events.BusEvent`; `labels_of` maps address -> labels."""
        labels_of = labels_of or {}
        payload = dict(bus_event.payload)
        addresses = payload.get("addresses") or []
        if isinstance(payload.get("address"), str):
            addresses = [payload["address"], *addresses]
        counts = payload.get("counts") or payload.get("summary") or {}
        message = payload.get("error") or payload.get("message") or payload.get("reason") or ""
        return cls(
            type=EventType(bus_event.type),
            time=bus_event.at,
            repository=bus_event.repository,
            revision=_str_or_none(payload.get("revision")),
            plan_id=bus_event.plan_id or _str_or_none(payload.get("planId")),
            apply_id=bus_event.apply_id,
            resources=resources_of(addresses, labels_of),
            severity=_severity_or_none(payload.get("severity")),
            message=str(message),
            summary={str(k): int(v) for k, v in dict(counts).items() if _is_count(v)},
            diagnostics=list(payload.get("diagnostics") or []),
            results=list(payload.get("results") or []),
            payload=payload,
        )


def plan_event(
    type: EventType,
    plan: Plan,
    *,
    repository: str | None = None,
    plan_id: str | None = None,
    labels_of: Mapping[str, Mapping[str, str]] | None = None,
    message: str = "",
) -> Event:
    """An Event about a plan: its changed resources, summary counts and diagnostics."""
    changed = [c.address for c in plan.changes if c.action.value != "noop"]
    changed += [a.address for a in plan.actions]
    return Event(
        type=type,
        repository=repository,
        revision=plan.revision,
        plan_id=plan_id,
        resources=resources_of(changed, labels_of or {}),
        message=message,
        summary=plan.summary.model_dump(),
        diagnostics=[d.model_dump(mode="json", exclude_none=True) for d in plan.diagnostics],
    )


class BusEventLike(Protocol):
    """The fields of `metalform.events.BusEvent` this module reads."""

    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def repository(self) -> str | None: ...
    @property
    def plan_id(self) -> str | None: ...
    @property
    def apply_id(self) -> str | None: ...
    @property
    def at(self) -> datetime: ...


def resources_of(
    addresses: Iterable[Any], labels_of: Mapping[str, Mapping[str, str]]
) -> tuple[EventResource, ...]:
    """EventResources for addresses, with the labels the desired state gives them."""
    seen: dict[str, EventResource] = {}
    for address in addresses:
        text = str(address)
        if text not in seen:
            seen[text] = EventResource(text, dict(labels_of.get(text, {})))
    return tuple(seen.values())


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _severity_or_none(value: Any) -> Severity | None:
    try:
        return Severity(value) if value is not None else None
    except ValueError:
        return None


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
