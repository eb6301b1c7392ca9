"""Planning one Server: desired flat state, the diff, and the actions that converge it.

Pure: desired resources and live state in, a change, action drafts and diagnostics out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.bios import (
    ATTRIBUTE_PREFIX,
    check_against_registry,
    effective_attributes,
    template_chain,
)
from reconciler.model import (
    Address,
    ChangeKind,
    Diagnostic,
    Expectation,
    LiveResource,
    Resource,
    Severity,
    is_of,
    typed,
)
from reconciler.model.hardware import RebootPolicy, ServerSpec
from reconciler.model.plan import ActionStatus
from reconciler.model.policy import PolicySpec
from reconciler.planners.accounts import plan_bmc
from reconciler.planners.base import Draft, PlanContext, ResourcePlan, readable
from reconciler.planners.diff import Diff, diff_declared
from reconciler.planners.firmware import plan_firmware
from reconciler.planners.provisioning import plan_provisioning
from reconciler.policy import window_state

# How long a BMC may take to show BIOS settings applied after a reboot or power-on.
BIOS_SETTLE_SECONDS = 900.0
POWER_SETTLE_SECONDS = 300.0


def desired_state(
    server: Resource[ServerSpec], resources: Mapping[Address, Resource]
) -> dict[str, Any]:
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
        return ResourcePlan.noop(live.address)
    server = typed(server, ServerSpec)
    result = ResourcePlan.noop(server.address, server.source)
    read = readable(result, server, live, ctx, "the server")
    if read is None:
        return result
    want = _manageable(server, read, ctx, result.diagnostics)
    diff = diff_declared(want, read.state, staged=read.pending, ignore=ctx.ignored(server))
    if diff:
        result.record(ChangeKind.UPDATE, diff.entries)
    result.drafts.extend(_drafts(server, read, diff, ctx, result.diagnostics))
    if server.spec.firmware is not None:
        _add_firmware(result, server, read, ctx)
    _add_bmc(result, server, read, ctx)
    if server.spec.provisioning is not None:
        _add_provisioning(result, server, read, ctx)
    return result


def _manageable(
    server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext, diags: list[Diagnostic]
) -> dict[str, Any]:
    """The desired state less what this BMC cannot manage or does not report, each said why."""
    want = desired_state(server, ctx.resources)
    bios_paths = [p for p in want if p.startswith(ATTRIBUTE_PREFIX)]
    refusal = _bios_refusal(server, live, ctx) if bios_paths else None
    if refusal is not None:
        diags.append(refusal)
        for path in bios_paths:
            want.pop(path)
    elif live.facts.get("biosRegistry"):
        for path in bios_paths:
            problem = _registry_problem(server, path, want[path], live, ctx)
            if problem is not None:
                diags.append(problem)
                want.pop(path)
    # Paths the BMC does not report cannot be compared; say so rather than plan blindly.
    for path in list(want):
        if path not in live.state and not path.startswith(ATTRIBUTE_PREFIX):
            message = f"the BMC does not report {path}; it is not managed"
            diags.append(ctx.diagnostic(server, Severity.WARNING, message))
            want.pop(path)
    return want


def _bios_refusal(
    server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext
) -> Diagnostic | None:
    """Why none of the Server's BIOS settings can be planned: the driver, the template's match."""
    driver = server.spec.bmc.driver.value
    if not ctx.offers(driver, "bios.set"):
        message = f"driver {driver} cannot manage BIOS settings"
        return ctx.diagnostic(
            server, Severity.ERROR, message, path=("spec", "bios"), field_name="spec.bios"
        )
    template = server.spec.bios.template if server.spec.bios else None
    mismatch = _match_problem(template, ctx.resources, live.facts) if template else None
    if mismatch is None:
        return None
    return ctx.diagnostic(
        server,
        Severity.ERROR,
        mismatch,
        path=("spec", "bios", "template"),
        field_name="spec.bios.template",
    )


def _registry_problem(
    server: Resource[ServerSpec], path: str, value: Any, live: LiveResource, ctx: PlanContext
) -> Diagnostic | None:
    """A BIOS value the BMC's attribute registry rejects, reported where it is declared."""
    name = path.removeprefix(ATTRIBUTE_PREFIX)
    problem = check_against_registry(name, value, live.facts["biosRegistry"])
    if not problem:
        return None
    owner = effective_attributes(server, ctx.resources)[name].declared_by
    yaml_path: tuple[str | int, ...] = (
        ("spec", "bios", "attributes", name)
        if owner == server.address
        else ("spec", "attributes", name)
    )
    return ctx.diagnostic(
        server,
        Severity.ERROR,
        problem,
        path=yaml_path,
        field_name=f"bios.attributes.{name}",
        owner=owner,
    )


def _drafts(
    server: Resource[ServerSpec],
    live: LiveResource,
    diff: Diff,
    ctx: PlanContext,
    diags: list[Diagnostic],
) -> list[Draft]:
    """BIOS staging and the boot override first, then the power action that applies them."""
    bios = [e for e in diff.entries if e.path.startswith(ATTRIBUTE_PREFIX)]
    to_stage = {
        e.path.removeprefix(ATTRIBUTE_PREFIX): e.after
        for e in bios
        if live.effective(e.path) != e.after
    }
    # A staged value equal to the desired one still needs a reboot to take effect.
    needs_reboot = {e.path: e.after for e in bios if e.before != e.after}
    drafts: list[Draft] = []
    if to_stage:
        count = len(to_stage)
        drafts.append(
            Draft(
                key="bios",
                operation="bios.set",
                params={"attributes": to_stage},
                expect=Expectation(
                    effective={ATTRIBUTE_PREFIX + k: v for k, v in to_stage.items()}
                ),
                description=f"stage {count} BIOS setting{'s' if count > 1 else ''}",
            )
        )
    boot_want = {p: v for p, v in diff.compared.items() if p.startswith("boot.")}
    if any(e.path in boot_want and e.before != e.after for e in diff.entries):
        params = {p.removeprefix("boot."): v for p, v in boot_want.items()}
        drafts.append(
            Draft(
                key="boot",
                operation="boot.set",
                params=params,
                expect=Expectation(current=boot_want),
                description="set boot override",
            )
        )
    after = tuple(d.key for d in drafts)
    power = _power_draft(server, live, diff.compared.get("power"), needs_reboot, after, ctx, diags)
    return [*drafts, power] if power is not None else drafts


def _power_draft(
    server: Resource[ServerSpec],
    live: LiveResource,
    want_power: str | None,
    needs_reboot: dict[str, Any],
    after: tuple[str, ...],
    ctx: PlanContext,
    diags: list[Diagnostic],
) -> Draft | None:
    """Power off, power on, or the reboot that applies BIOS settings; or why there is none."""
    live_power = live.state.get("power")
    count = len(needs_reboot)
    if want_power == "Off":
        if count:
            diags.append(
                ctx.diagnostic(
                    server,
                    Severity.WARNING,
                    f"{count} BIOS setting(s) take effect at the next power-on (power: Off)",
                )
            )
        if live_power != "On":
            return None
        return Draft(
            key="power",
            operation="power.off",
            params={},
            disruptive=True,
            after=after,
            description="power off",
            expect=Expectation(current={"power": "Off"}, settle_seconds=POWER_SETTLE_SECONDS),
        )
    if live_power == "Off" and want_power == "On":
        return Draft(
            key="power",
            operation="power.on",
            params={},
            after=after,
            expect=Expectation(
                current={"power": "On", **needs_reboot}, settle_seconds=BIOS_SETTLE_SECONDS
            ),
            description="power on" + (" (applies BIOS settings)" if count else ""),
        )
    if live_power == "On" and count:
        return _reboot_draft(server, needs_reboot, after, ctx, diags)
    if live_power == "Off" and count and want_power is None:
        diags.append(
            ctx.diagnostic(
                server,
                Severity.WARNING,
                f"{count} BIOS setting(s) take effect at the next power-on (the server is off)",
            )
        )
    return None


def _reboot_draft(
    server: Resource[ServerSpec],
    needs_reboot: dict[str, Any],
    after: tuple[str, ...],
    ctx: PlanContext,
    diags: list[Diagnostic],
) -> Draft | None:
    """The reboot that applies BIOS settings, as the Server's `reboot` policy allows."""
    count = len(needs_reboot)
    policy = server.spec.reboot
    if policy is RebootPolicy.NEVER:
        diags.append(
            ctx.diagnostic(
                server, Severity.WARNING, f"{count} BIOS setting(s) stay pending: reboot: Never"
            )
        )
        return None
    reboot = Draft(
        key="power",
        operation="power.reset",
        params={},
        disruptive=True,
        after=after,
        expect=Expectation(
            current={"power": "On", **needs_reboot}, settle_seconds=BIOS_SETTLE_SECONDS
        ),
        description=f"reboot to apply {count} BIOS setting(s)",
    )
    return _gate_reboot(reboot, server, ctx, diags, f"{count} BIOS setting(s)")


def _gate_reboot(
    reboot: Draft,
    server: Resource[ServerSpec],
    ctx: PlanContext,
    diags: list[Diagnostic],
    what: str,
) -> Draft | None:
    """A reboot as the Server's `reboot` policy allows: None (Never), deferred, or as is."""
    policy = server.spec.reboot
    if policy is RebootPolicy.NEVER:
        diags.append(
            ctx.diagnostic(server, Severity.WARNING, f"{what} stay pending: reboot: Never")
        )
        return None
    if policy is RebootPolicy.IN_MAINTENANCE_WINDOW:
        policies = [
            r for r in ctx.resources.values() if r.kind == "Policy" and is_of(r, PolicySpec)
        ]
        window = window_state(server, policies, ctx.now)
        if not window.covered:
            reboot.status = ActionStatus.DEFERRED
            reboot.reason = "reboot: InMaintenanceWindow, but no maintenance window covers it"
        elif not window.open:
            reboot.status = ActionStatus.DEFERRED
            reboot.reason = f"reboot: InMaintenanceWindow, {window.why}"
    return reboot


def _add_firmware(
    result: ResourcePlan, server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext
) -> None:
    """Firmware updates first; their reset is folded into a reboot the Server gets anyway."""
    planned = plan_firmware(server, live, ctx)
    if planned.diff:
        result.record(ChangeKind.UPDATE, [*result.change.diff, *planned.diff])
    result.diagnostics.extend(planned.diagnostics)
    result.drafts[:0] = planned.drafts
    reset = planned.reset
    if reset is None:
        return
    count = len(reset.expect.current)
    power = next((d for d in result.drafts if d.key == "power"), None)
    if power is not None and power.operation in ("power.reset", "power.on"):
        # One boot activates the firmware and the BIOS settings: never two reboots.
        power.after = (*power.after, *reset.after)
        power.expect = power.expect.model_copy(
            update={"current": {**power.expect.current, **reset.expect.current}}
        )
        power.description += f" (activates {count} firmware component(s))"
        return
    if live.state.get("power") != "On" or (power is not None and power.operation == "power.off"):
        message = f"{count} firmware component(s) take effect at the next power-on"
        result.diagnostics.append(ctx.diagnostic(server, Severity.WARNING, message))
        return
    gated = _gate_reboot(reset, server, ctx, result.diagnostics, f"{count} firmware component(s)")
    if gated is not None:
        result.drafts.append(gated)


def _add_bmc(
    result: ResourcePlan, server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext
) -> None:
    """Accounts, network services and a login rotation to finish; the rest waits for the
    rotation, so that every later action logs in with the new secret."""
    planned = plan_bmc(server, live, ctx)
    result.diagnostics.extend(planned.diagnostics)
    if not planned.entries and not planned.drafts:
        return
    if planned.entries:
        result.record(ChangeKind.UPDATE, [*result.change.diff, *planned.entries])
    if any(d.key == "rotate" for d in planned.drafts):
        for draft in result.drafts:
            draft.after = (*draft.after, "rotate")
    result.drafts = [*planned.drafts, *result.drafts]


def _add_provisioning(
    result: ResourcePlan, server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext
) -> None:
    """The MAAS lifecycle, after the BMC's planned work (MAAS power-cycles the machine)."""
    first = tuple(d.key for d in result.drafts if d.status is ActionStatus.PLANNED)
    planned = plan_provisioning(server, live, ctx, after=first)
    if planned.diff:
        result.record(ChangeKind.UPDATE, [*result.change.diff, *planned.diff])
    result.drafts.extend(planned.drafts)
    result.diagnostics.extend(planned.diagnostics)


def _match_problem(
    template: str, resources: Mapping[Address, Resource], facts: Mapping[str, Any]
) -> str | None:
    """Why the template's `match` guard rejects this hardware, or None."""
    for t in template_chain(template, resources):
        match = t.spec.match
        if match is None:
            continue
        for field_name in ("manufacturer", "model"):
            want = getattr(match, field_name)
            got = facts.get(field_name)
            if want is not None and got != want:
                return (
                    f"BiosTemplate {t.name!r} is for {field_name} {want!r}, "
                    f"but the server reports {got!r}"
                )
    return None
