"""Policies the planner enforces: protected resources and the size of one apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def enforce(
    policies: Sequence[Resource],
    resources: Mapping[Address, Resource],
    changes: Sequence[Change],
    actions: list[Action],
) -> tuple[list[Action], list[Diagnostic]]:
    """Mark refused actions; return the actions and the diagnostics that explain them."""
    diags: list[Diagnostic] = []
    out = list(actions)
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
            diags.append(Diagnostic(
                severity=Severity.ERROR, address=action.address, location=policy.location,
                message=f"{action.operation} refused: protected by Policy/{policy.name}",
            ))
    changed = [c.address for c in changes if c.action is not ChangeKind.NOOP]
    for policy in policies:
        limit = policy.spec.max_changes_per_apply
        if limit is None or len(changed) <= limit:
            continue
        reason = (f"{len(changed)} resources change; Policy/{policy.name} allows at most "
                  f"{limit} per apply (use --target to split the change)")
        out = [
            a.model_copy(update={"status": ActionStatus.REFUSED, "reason": reason})
            if a.status is ActionStatus.PLANNED else a
            for a in out
        ]
        diags.append(Diagnostic(severity=Severity.ERROR, message=reason,
                                address=policy.address, location=policy.location))
    return out, _propagate(out, diags)


def _propagate(actions: list[Action], diags: list[Diagnostic]) -> list[Diagnostic]:
    """An action whose dependency will not run cannot run either: same status, say why."""
    by_id = {a.id: a for a in actions}
    for i, action in enumerate(actions):
        if action.status is not ActionStatus.PLANNED:
            continue
        blocked = [by_id[d] for d in action.depends_on
                   if by_id[d].status is not ActionStatus.PLANNED]
        if blocked:
            first = blocked[0]
            actions[i] = action.model_copy(update={
                "status": first.status,
                "reason": f"depends on action {first.id} ({first.operation}), {first.status.value}",
            })
            by_id[action.id] = actions[i]
    return diags
