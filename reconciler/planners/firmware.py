"""Planning a Server's firmware against its FirmwareBaseline.

Pure: the Server, its live state and the plan context in; diff entries, drafts and
diagnostics out. The redfish provider reads, per Server:
- `state["firmware.<key>"]`: the version in effect of each FirmwareInventory member;
- `facts["firmware"]`: `{key: {id, name, version, updateable}}` (absent: no UpdateService);
  the key is the member's Name when unique for the system, else its Id;
- `facts["firmwareTasks"]`: the BMC's update tasks, `{id, target, imageUri, state, percent,
  message, awaitingReset}`; `target` is the key of the member the task's Payload names.

A component whose task is still running is waited for (`firmware.wait`), never flashed again;
one whose image is staged until the next reset gets the reset alone. Task progress lives in
`facts`, which the plan's live fingerprint leaves out: a task moving from 40% to 42% between
plan and apply does not make the plan stale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from reconciler.model import Diagnostic, DiffEntry, Expectation, LiveResource, Resource, Severity
from reconciler.model.firmware import FirmwareBaselineSpec, FirmwareComponent
from reconciler.model.hardware import ServerSpec
from reconciler.model.plan import ActionStatus
from reconciler.planners.base import Draft, PlanContext

PREFIX = "firmware."
UPDATE = "firmware.update"
WAIT = "firmware.wait"
RESET = "firmware.reset"
RESET_KEY = "firmware-reset"
RUNNING_TASK_STATES = frozenset(
    {"New", "Starting", "Running", "Pending", "Stopping", "Suspended", "Service"}
)
# A flash plus the reboot that activates it: BMCs take minutes to come back.
RESET_SETTLE_SECONDS = 900.0
_NUMERIC = re.compile(r"\d+(\.\d+)*")


def compare_versions(current: str, desired: str) -> int | None:
    """-1, 0 or 1 as `current` is older than, equal to or newer than `desired`.

    Versions are compared as dotted numbers (`2.10.1` > `2.9.7`; a missing part counts as 0,
    so `2.1` == `2.1.0`), after dropping a leading `v`. Anything else (`U46`, `1.2a`) can only
    be told equal or not: None when two such strings differ, so no downgrade is ever inferred
    from a guess.
    """
    a, b = current.strip().removeprefix("v"), desired.strip().removeprefix("v")
    if a == b:
        return 0
    if not (_NUMERIC.fullmatch(a) and _NUMERIC.fullmatch(b)):
        return None
    left, right = [int(x) for x in a.split(".")], [int(x) for x in b.split(".")]
    width = max(len(left), len(right))
    left += [0] * (width - len(left))
    right += [0] * (width - len(right))
    return (left > right) - (left < right)


@dataclass
class FirmwarePlan:
    diff: list[DiffEntry] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    reset: Draft | None = None
    """The reset that activates what is flashed or staged; the server planner gates it."""
    staged: list[str] = field(default_factory=list)
    """Components whose image the BMC holds, waiting for the next reset."""
    diagnostics: list[Diagnostic] = field(default_factory=list)


def plan_firmware(
    server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext
) -> FirmwarePlan:
    """Updates, waits and the activating reset that bring the Server to its baseline."""
    result = FirmwarePlan()
    firmware = server.spec.firmware
    if firmware is None:
        return result
    baseline = ctx.resources.get(f"FirmwareBaseline/{firmware.baseline}")
    if baseline is None or not isinstance(baseline.spec, FirmwareBaselineSpec):
        return result  # the loader reports a dangling reference
    problem = _refusal(server, baseline.spec, live, ctx)
    if problem is not None:
        result.diagnostics.append(problem)
        return result
    inventory: dict[str, dict[str, Any]] = live.facts["firmware"]
    tasks = live.facts.get("firmwareTasks", [])
    activates: dict[str, str] = {}
    for index, component in enumerate(baseline.spec.components):
        member = _member(inventory, component.name)
        if member is None or not inventory[member].get("updateable", False):
            result.diagnostics.append(
                _component_problem(server, baseline, index, component, inventory, member, ctx)
            )
            continue
        current = str(live.state.get(PREFIX + member, inventory[member].get("version", "")))
        if _plan_component(result, baseline, member, component, current, tasks):
            activates[PREFIX + member] = component.version
    if activates:
        keys = tuple(d.key for d in result.drafts if d.status is ActionStatus.PLANNED)
        result.reset = Draft(
            key=RESET_KEY,
            operation=RESET,
            params={"components": sorted(p.removeprefix(PREFIX) for p in activates)},
            disruptive=True,
            after=keys,
            expect=Expectation(current=activates, settle_seconds=RESET_SETTLE_SECONDS),
            description=f"reset to activate {len(activates)} firmware component(s)",
            reason=f"staged until the next reset: {', '.join(result.staged)}"
            if result.staged
            else "",
        )
    return result


def _plan_component(
    result: FirmwarePlan,
    baseline: Resource,
    member: str,
    component: FirmwareComponent,
    current: str,
    tasks: list[dict[str, Any]],
) -> bool:
    """Plan one component; True when a reset must follow to make the desired version active."""
    path = PREFIX + member
    if compare_versions(current, component.version) == 0:
        return False
    running = next(
        (t for t in tasks if t.get("target") == member and t.get("state") in RUNNING_TASK_STATES),
        None,
    )
    staged = next(
        (
            t
            for t in tasks
            if t.get("target") == member
            and t.get("awaitingReset")
            and t.get("imageUri") == component.image.url
        ),
        None,
    )
    entry = DiffEntry(path=path, before=current, after=component.version)
    if running is not None:
        percent = running.get("percent")
        shown = f" ({percent}%)" if isinstance(percent, int) else ""
        result.diff.append(entry)
        result.drafts.append(
            Draft(
                key=f"firmware:{member}",
                operation=WAIT,
                params={"component": member, "task": running.get("id")},
                reason=f"firmware update in progress{shown}",
                description=f"wait for the firmware update of {component.name}",
            )
        )
        return True
    if staged is not None:
        result.diff.append(entry.model_copy(update={"pending": component.version}))
        result.staged.append(f"{component.name} {component.version}")
        return True
    result.diff.append(entry)
    draft = Draft(
        key=f"firmware:{member}",
        operation=UPDATE,
        params={
            "component": member,
            "version": component.version,
            "image": {"url": component.image.url, "sha256": component.image.sha256},
        },
        description=f"update firmware {component.name} {current} -> {component.version}",
    )
    baseline_spec = baseline.spec
    assert isinstance(baseline_spec, FirmwareBaselineSpec)
    if compare_versions(current, component.version) == 1 and not baseline_spec.allow_downgrade:
        draft.status = ActionStatus.REFUSED
        draft.reason = (
            f"downgrade of {component.name} from {current} to {component.version}: "
            f"{baseline.address} does not set allowDowngrade: true"
        )
        result.drafts.append(draft)
        return False
    result.drafts.append(draft)
    return True


def _member(inventory: dict[str, dict[str, Any]], name: str) -> str | None:
    """The inventory key a component names: the key itself, else a member's Name, else its Id."""
    if name in inventory:
        return name
    for field_name in ("name", "id"):
        found = next((k for k, m in sorted(inventory.items()) if m.get(field_name) == name), None)
        if found is not None:
            return found
    return None


def _refusal(
    server: Resource[ServerSpec],
    baseline: FirmwareBaselineSpec,
    live: LiveResource,
    ctx: PlanContext,
) -> Diagnostic | None:
    """Why none of the Server's firmware can be planned: the driver, the match, no inventory."""
    driver = server.spec.bmc.driver.value
    if not ctx.offers(driver, UPDATE):
        return _on_server(ctx, server, f"driver {driver} cannot manage firmware")
    match = baseline.match
    if match is not None:
        for name in ("manufacturer", "model"):
            want, got = getattr(match, name), live.facts.get(name)
            if want is not None and got != want:
                return _on_server(
                    ctx,
                    server,
                    f"FirmwareBaseline {server.spec.firmware.baseline!r} is for {name} "  # type: ignore[union-attr]
                    f"{want!r}, but the server reports {got!r}",
                    "baseline",
                )
    if not isinstance(live.facts.get("firmware"), dict):
        return _on_server(ctx, server, "the BMC publishes no UpdateService FirmwareInventory")
    return None


def _on_server(
    ctx: PlanContext, server: Resource[ServerSpec], message: str, *path: str
) -> Diagnostic:
    return ctx.diagnostic(
        server,
        Severity.ERROR,
        message,
        path=("spec", "firmware", *path),
        field_name=".".join(("spec.firmware", *path)),
    )


def _component_problem(
    server: Resource[ServerSpec],
    baseline: Resource,
    index: int,
    component: FirmwareComponent,
    inventory: dict[str, dict[str, Any]],
    member: str | None,
    ctx: PlanContext,
) -> Diagnostic:
    """A component the BMC does not have or cannot update, at the baseline's line."""
    if member is None:
        known = ", ".join(sorted(inventory)) or "none"
        message = (
            f"{server.address}: the BMC has no firmware component {component.name!r} "
            f"(its FirmwareInventory: {known})"
        )
    else:
        message = f"{server.address}: the BMC reports firmware {component.name!r} not Updateable"
    return ctx.diagnostic(
        server,
        Severity.ERROR,
        message,
        path=("spec", "components", index, "name"),
        field_name=f"spec.components[{index}].name",
        owner=baseline.address,
    )
