"""Policies the planner enforces: protection, apply size, maintenance windows, blast radius."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from reconciler.model import (
    Action,
    ActionStatus,
    Address,
    Change,
    ChangeKind,
    Diagnostic,
    Resource,
    Severity,
)
from reconciler.model.policy import PolicySpec
from reconciler.rollout import assign_waves
from reconciler.windows import CronError, is_open, next_opening


@dataclass(frozen=True)
class WindowState:
    covered: bool
    """Some Policy's maintenance window applies to this resource."""
    open: bool
    why: str


def window_state(
    resource: Resource, policies: Sequence[Resource[PolicySpec]], now: datetime
) -> WindowState:
    """Whether disruptive actions on `resource` may run now, per the maintenance windows."""
    covering = [
        (p, w)
        for p in policies
        for w in p.spec.maintenance_windows
        if w.match is None or w.match.matches(resource.kind, resource.metadata.labels)
    ]
    if not covering:
        return WindowState(False, True, "no maintenance window covers it")
    openings = []
    for policy, window in covering:
        try:
            if is_open(window.cron, window.duration, window.timezone, now):
                return WindowState(True, True, f"Policy/{policy.name} window is open")
            upcoming = next_opening(window.cron, window.timezone, now)
        except CronError as exc:
            return WindowState(True, False, f"Policy/{policy.name}: {exc}")
        if upcoming is not None:
            openings.append(upcoming)
    when = f"; next opens {min(openings).isoformat(timespec='minutes')}" if openings else ""
    return WindowState(True, False, f"outside its maintenance window{when}")


def _defer(action: Action, reason: str) -> Action:
    return action.model_copy(update={"status": ActionStatus.DEFERRED, "reason": reason})


def enforce(
    policies: Sequence[Resource[PolicySpec]],
    resources: Mapping[Address, Resource],
    changes: Sequence[Change],
    actions: list[Action],
    now: datetime,
) -> tuple[list[Action], list[Diagnostic]]:
    """Mark refused and deferred actions; return them and the diagnostics that explain them."""
    diags: list[Diagnostic] = []
    out = list(actions)
    # Maintenance windows: disruptive actions outside a window wait for it.
    for i, action in enumerate(out):
        target = resources.get(action.address)
        if not action.disruptive or action.status is not ActionStatus.PLANNED or target is None:
            continue
        state = window_state(target, policies, now)
        if state.covered and not state.open:
            out[i] = _defer(action, state.why)
    for policy in policies:
        protect = policy.spec.protect
        if protect is None:
            continue
        for i, action in enumerate(out):
            if not action.disruptive or action.status is not ActionStatus.PLANNED:
                continue
            target = resources.get(action.address)
            if target is None or not protect.matches(target.kind, target.metadata.labels):
                continue
            reason = f"{action.address} is protected by Policy/{policy.name}"
            out[i] = action.model_copy(update={"status": ActionStatus.REFUSED, "reason": reason})
            diags.append(
                Diagnostic(
                    severity=Severity.ERROR,
                    address=action.address,
                    location=policy.location,
                    message=f"{action.operation} refused: protected by Policy/{policy.name}",
                )
            )
    changed = [c.address for c in changes if c.action is not ChangeKind.NOOP]
    for policy in policies:
        limit = policy.spec.max_changes_per_apply
        if limit is None or len(changed) <= limit:
            continue
        reason = (
            f"{len(changed)} resources change; Policy/{policy.name} allows at most "
            f"{limit} per apply (use --target to split the change)"
        )
        out = [
            a.model_copy(update={"status": ActionStatus.REFUSED, "reason": reason})
            if a.status is ActionStatus.PLANNED
            else a
            for a in out
        ]
        diags.append(
            Diagnostic(
                severity=Severity.ERROR,
                message=reason,
                address=policy.address,
                location=policy.location,
            )
        )
    diags = _propagate(out, diags)
    # Waves last: only what will run takes a place in a wave.
    return assign_waves(policies, resources, out), diags


def _propagate(actions: list[Action], diags: list[Diagnostic]) -> list[Diagnostic]:
    """An action whose dependency will not run cannot run either: same status, say why."""
    by_id = {a.id: a for a in actions}
    for i, action in enumerate(actions):
        if action.status is not ActionStatus.PLANNED:
            continue
        blocked = [
            by_id[d] for d in action.depends_on if by_id[d].status is not ActionStatus.PLANNED
        ]
        if blocked:
            first = blocked[0]
            actions[i] = action.model_copy(
                update={
                    "status": first.status,
                    "reason": (
                        f"depends on action {first.id} ({first.operation}), {first.status.value}"
                    ),
                }
            )
            by_id[action.id] = actions[i]
    return diags
