"""What every planner shares: the plan context it reads and the resource plan it returns.

A planner is pure: desired resources and live state in, a change, action drafts and
diagnostics out. The types live here, below every planner, so planners import them and never
each other's entry points for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.model import (
    Address,
    Change,
    ChangeKind,
    Diagnostic,
    DiffEntry,
    Expectation,
    LiveResource,
    Location,
    Resource,
    Severity,
)
from reconciler.model.plan import ActionStatus


@dataclass
class Draft:
    """An action before it gets its plan-wide id.

    `after` names the drafts it waits for: a key of the same resource's drafts, or
    `Kind/name:key` for another resource's (a host joins its new aggregate before it leaves
    the old one).
    """

    key: str
    operation: str
    params: dict[str, Any]
    disruptive: bool = False
    after: tuple[str, ...] = ()
    expect: Expectation = field(default_factory=Expectation)
    status: ActionStatus = ActionStatus.PLANNED
    reason: str = ""
    description: str = ""
    provider: str = ""
    """Driver key of the provider that executes it; empty: the resource's primary provider."""


@dataclass
class ResourcePlan:
    address: Address
    change: Change
    drafts: list[Draft] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    reachable: bool = True
    """False when the live state could not be read: the change is unknown, not a no-op."""

    @classmethod
    def noop(cls, address: Address, source: str = "git") -> ResourcePlan:
        """Nothing to change yet; `source`: where the desired resource was declared."""
        return cls(address, Change(address=address, action=ChangeKind.NOOP, source=source))

    def record(self, action: ChangeKind, diff: list[DiffEntry]) -> None:
        """Set the change's kind and its diff."""
        self.change = self.change.model_copy(update={"action": action, "diff": diff})


@dataclass(frozen=True)
class PlanContext:
    """What every kind's planner may consult: all desired resources, positions, capabilities."""

    resources: Mapping[Address, Resource]
    locate: Callable[[Address, Sequence[str | int]], Location | None]
    operations: Mapping[str, frozenset[str]]
    """Operations each driver supports (`redfish` -> {`bios.set`, ...})."""
    now: datetime
    files: Callable[[str], str] | None = None
    """Reads a file of the planned revision by repository-relative path (userData templates);
    None when the plan is made without a repository."""
    live: Mapping[Address, LiveResource] = field(default_factory=dict)
    """Every resource's live state, for planners whose actions depend on another resource's
    (an Aggregate waits for the MAAS deployment of a host it adds)."""
    ignore: Mapping[Address, tuple[str, ...]] = field(default_factory=dict)
    """Field globs each resource's diff leaves out (`spec.ignore`, accepted drift)."""
    set_unknown_passwords: bool = False
    """Set the password of declared BMC accounts whose password the provider cannot tell."""

    def offers(self, driver: str, operation: str) -> bool:
        """Whether the provider of `driver` can perform `operation`."""
        return operation in self.operations.get(driver, frozenset())

    def ignored(self, resource: Resource) -> tuple[str, ...]:
        """The field globs the diff of `resource` must not compare."""
        return self.ignore.get(resource.address, ())

    def diagnostic(
        self,
        resource: Resource,
        severity: Severity,
        message: str,
        *,
        path: tuple[str | int, ...] = (),
        field_name: str | None = None,
        owner: Address | None = None,
    ) -> Diagnostic:
        """A diagnostic on `resource`, located at `path` of its document.

        `owner` is the resource that declares the field when another one does (a BiosTemplate
        attribute a Server inherits): the diagnostic names it, and has no location if the path
        cannot be found in it (the resource's own would point at the wrong document).
        """
        address = owner or resource.address
        location = self.locate(address, path) if path else None
        if location is None and owner is None:
            location = resource.location
        return Diagnostic(
            severity=severity,
            message=message,
            address=address,
            field=field_name,
            location=location,
        )


def readable(
    result: ResourcePlan,
    resource: Resource,
    live: LiveResource | None,
    ctx: PlanContext,
    what: str,
) -> LiveResource | None:
    """The live state if it was read; else None, said so, and the plan marked unreachable.

    An unread resource is not a no-op: nothing is planned and its change stays unknown.
    """
    if live is not None and live.reachable:
        return live
    why = live.error if live is not None and live.error else "no provider answered"
    message = f"cannot read {what}, nothing planned for it: {why}"
    result.diagnostics.append(ctx.diagnostic(resource, Severity.WARNING, message))
    result.reachable = False
    return None
