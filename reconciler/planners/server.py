"""Planning one Server: desired flat state, the diff, and the actions that converge it.

Pure: desired resources and live state in, a change, action drafts and diagnostics out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.bios import ATTRIBUTE_PREFIX, check_against_registry, effective_attributes
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
from reconciler.model.hardware import RebootPolicy
from reconciler.model.plan import ActionStatus
from reconciler.policy import window_state

# How long a BMC may take to show BIOS settings applied after a reboot or power-on.
BIOS_SETTLE_SECONDS = 900.0
POWER_SETTLE_SECONDS = 300.0


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


def desired_state(server: Resource, resources: Mapping[Address, Resource]) -> dict[str, Any]:
    """The declared fields of a Server as flat paths; only what Git declares is compared."""
    spec = server.spec
    want: dict[str, Any] = {}
    if spec.power is not None:
        want["power"] = spec.power.value
    if spec.boot is not None:
        want["boot.source"] = spec.boot.source.value
        if "mode" in spec.boot.model_fields_set:
            want["boot.mode"] = spec.boot.mode.value
    for name, attr in effective_attributes(server, resources).items():
        want[ATTRIBUTE_PREFIX + name] = attr.value
    return want


def plan_server(
    server: Resource | None, live: LiveResource | None, ctx: PlanContext
) -> ResourcePlan:
    """Power, boot override and BIOS of one Server (a Server removed from Git is unmanaged)."""
    if server is None:
        assert live is not None
        return ResourcePlan(live.address, Change(address=live.address, action=ChangeKind.NOOP))
    resources = ctx.resources
    locate = ctx.locate
    operations = ctx.operations.get(server.spec.bmc.driver.value, frozenset())
    address = server.address
    result = ResourcePlan(address, Change(address=address, action=ChangeKind.NOOP,
                                          source=server.source))
    diags = result.diagnostics

    def diag(severity: Severity, message: str, where: Address | None = None,
             path: tuple[str | int, ...] = (), field_name: str | None = None) -> None:
        location: Location | None = locate(where or address, path) if path else None
        if location is None and where is None:
            location = server.location
        diags.append(Diagnostic(severity=severity, message=message, address=where or address,
                                field=field_name, location=location))

    if live is None or not live.reachable:
        why = live.error if live is not None and live.error else "no provider answered"
        diag(Severity.WARNING, f"cannot read the server, nothing planned for it: {why}")
        result.reachable = False
        return result

    want = desired_state(server, resources)
    attributes = effective_attributes(server, resources)

    # BIOS: the template's match guard and the BMC's attribute registry, at plan time.
    bios_paths = [p for p in want if p.startswith(ATTRIBUTE_PREFIX)]
    if bios_paths and "bios.set" not in operations:
        diag(Severity.ERROR, f"driver {server.spec.bmc.driver.value} cannot manage BIOS settings",
             path=("spec", "bios"), field_name="spec.bios")
        for p in bios_paths:
            want.pop(p)
        bios_paths = []
    template_name = server.spec.bios.template if server.spec.bios else None
    if bios_paths and template_name:
        mismatch = _match_problem(template_name, resources, live.facts)
        if mismatch:
            diag(Severity.ERROR, mismatch, path=("spec", "bios", "template"),
                 field_name="spec.bios.template")
            for p in bios_paths:
                want.pop(p)
            bios_paths = []
    registry = live.facts.get("biosRegistry")
    if registry:
        for path in bios_paths:
            name = path.removeprefix(ATTRIBUTE_PREFIX)
            problem = check_against_registry(name, want[path], registry)
            if problem:
                owner = attributes[name].declared_by
                yaml_path: tuple[str | int, ...] = (
                    ("spec", "bios", "attributes", name) if owner == address
                    else ("spec", "attributes", name)
                )
                diag(Severity.ERROR, problem, where=owner, path=yaml_path,
                     field_name=f"bios.attributes.{name}")
                want.pop(path)

    # Paths the BMC does not report cannot be compared; say so rather than plan blindly.
    for path in list(want):
        if path not in live.state and not path.startswith(ATTRIBUTE_PREFIX):
            diag(Severity.WARNING, f"the BMC does not report {path}; it is not managed")
            want.pop(path)

    diff: list[DiffEntry] = []
    for path, after in want.items():
        before = live.state.get(path)
        pending = live.pending.get(path)
        in_sync = live.effective(path) == after if path.startswith(ATTRIBUTE_PREFIX) else (
            before == after)
        # A staged value equal to the desired one still needs a reboot to take effect.
        awaiting_reboot = path.startswith(ATTRIBUTE_PREFIX) and in_sync and before != after
        if not in_sync or awaiting_reboot:
            diff.append(DiffEntry(path=path, before=before, after=after, pending=pending))
    if diff:
        result.change = result.change.model_copy(update={"action": ChangeKind.UPDATE,
                                                         "diff": diff})

    to_stage = {
        p.removeprefix(ATTRIBUTE_PREFIX): v
        for p, v in want.items()
        if p.startswith(ATTRIBUTE_PREFIX) and live.effective(p) != v
    }
    needs_reboot = {
        p: v for p, v in want.items()
        if p.startswith(ATTRIBUTE_PREFIX) and live.state.get(p) != v
    }
    drafts = result.drafts
    before_power: list[str] = []
    if to_stage:
        drafts.append(Draft(
            key="bios", operation="bios.set", params={"attributes": to_stage},
            expect=Expectation(effective={ATTRIBUTE_PREFIX + k: v for k, v in to_stage.items()}),
            description=f"stage {len(to_stage)} BIOS setting{'s' if len(to_stage) > 1 else ''}",
        ))
        before_power.append("bios")
    boot_want = {p: v for p, v in want.items() if p.startswith("boot.")}
    if any(live.state.get(p) != v for p, v in boot_want.items()):
        params = {p.removeprefix("boot."): v for p, v in boot_want.items()}
        drafts.append(Draft(key="boot", operation="boot.set", params=params,
                            expect=Expectation(current=boot_want),
                            description="set boot override"))
        before_power.append("boot")

    live_power = live.state.get("power")
    want_power = want.get("power")
    if want_power == "Off":
        if live_power == "On":
            drafts.append(Draft(key="power", operation="power.off", params={}, disruptive=True,
                                after=tuple(before_power),
                                expect=Expectation(current={"power": "Off"},
                                                   settle_seconds=POWER_SETTLE_SECONDS),
                                description="power off"))
        if needs_reboot:
            diag(Severity.WARNING, f"{len(needs_reboot)} BIOS setting(s) take effect at the "
                 "next power-on (power: Off)")
    elif live_power == "Off" and want_power == "On":
        current = {"power": "On", **needs_reboot}
        drafts.append(Draft(key="power", operation="power.on", params={},
                            after=tuple(before_power),
                            expect=Expectation(current=current,
                                               settle_seconds=BIOS_SETTLE_SECONDS),
                            description="power on" + (" (applies BIOS settings)"
                                                      if needs_reboot else "")))
    elif live_power == "On" and needs_reboot:
        reboot = Draft(key="power", operation="power.reset", params={}, disruptive=True,
                       after=tuple(before_power),
                       expect=Expectation(current={"power": "On", **needs_reboot},
                                          settle_seconds=BIOS_SETTLE_SECONDS),
                       description=f"reboot to apply {len(needs_reboot)} BIOS setting(s)")
        policy = server.spec.reboot
        if policy is RebootPolicy.NEVER:
            diag(Severity.WARNING, f"{len(needs_reboot)} BIOS setting(s) stay pending: "
                 "reboot: Never")
        elif policy is RebootPolicy.IN_MAINTENANCE_WINDOW:
            window = window_state(server, [r for r in resources.values() if r.kind == "Policy"],
                                  ctx.now)
            if not window.covered:
                reboot.status = ActionStatus.DEFERRED
                reboot.reason = "reboot: InMaintenanceWindow, but no maintenance window covers it"
            elif not window.open:
                reboot.status = ActionStatus.DEFERRED
                reboot.reason = f"reboot: InMaintenanceWindow, {window.why}"
            drafts.append(reboot)
        else:
            drafts.append(reboot)
    elif live_power == "Off" and needs_reboot and want_power is None:
        diag(Severity.WARNING, f"{len(needs_reboot)} BIOS setting(s) take effect at the next "
             "power-on (the server is off)")
    if server.spec.provisioning is not None:
        _add_provisioning(result, server, live, ctx)
    return result


def _add_provisioning(
    result: ResourcePlan, server: Resource, live: LiveResource, ctx: PlanContext
) -> None:
    """The MAAS lifecycle, after the BMC's planned work (MAAS power-cycles the machine)."""
    from reconciler.planners.provisioning import plan_provisioning

    first = tuple(d.key for d in result.drafts if d.status is ActionStatus.PLANNED)
    planned = plan_provisioning(server, live, ctx, after=first)
    if planned.diff:
        result.change = result.change.model_copy(update={
            "action": ChangeKind.UPDATE, "diff": [*result.change.diff, *planned.diff]})
    result.drafts.extend(planned.drafts)
    result.diagnostics.extend(planned.diagnostics)


def _match_problem(
    template: str, resources: Mapping[Address, Resource], facts: Mapping[str, Any]
) -> str | None:
    """Why the template's `match` guard rejects this hardware, or None."""
    from reconciler.bios import template_chain

    for t in template_chain(template, resources):
        match = t.spec.match
        if match is None:
            continue
        for field_name in ("manufacturer", "model"):
            want = getattr(match, field_name)
            got = facts.get(field_name)
            if want is not None and got != want:
                return (f"BiosTemplate {t.name!r} is for {field_name} {want!r}, "
                        f"but the server reports {got!r}")
    return None

