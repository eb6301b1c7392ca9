"""A plan shaped for the console's templates, as the pull-request comment groups it:
changed resources with their fields (current, pending, desired), their actions with the
disruptive, deferred and refused markers and reasons, then diagnostics."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from metalform.store import ApplyRecord
from reconciler.model import Action, ActionStatus, ChangeKind, DiffEntry, Plan, Severity
from reconciler.render import SYMBOL, params_text, summary_line, value
from reconciler.secrets import SENSITIVE


@dataclass(frozen=True)
class FieldRow:
    path: str
    current: str
    pending: str
    desired: str


@dataclass
class ResourceView:
    address: str
    kind: str
    symbol: str
    fields: list[FieldRow] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


@dataclass
class PlanView:
    revision: str
    summary: str
    resources: list[ResourceView]
    runnable: list[Action]
    disruptive: list[Action]
    held: list[Action]
    """Deferred or refused at plan time: they will not run."""
    errors: list[str]
    warnings: list[str]
    params: dict[int, str]


def _shown(entry: DiffEntry, which: str) -> str:
    return SENSITIVE if entry.sensitive else value(getattr(entry, which))


def plan_view(plan: Plan) -> PlanView:
    by_address: dict[str, list[Action]] = defaultdict(list)
    for action in plan.actions:
        by_address[action.address].append(action)
    resources = []
    for change in plan.changes:
        if change.action is ChangeKind.NOOP:
            continue
        rows = [
            FieldRow(
                e.path,
                _shown(e, "before"),
                _shown(e, "pending") if e.pending is not None else "",
                _shown(e, "after"),
            )
            for e in change.diff
        ]
        resources.append(
            ResourceView(
                change.address,
                change.action.value,
                SYMBOL[change.action],
                rows,
                by_address.pop(change.address, []),
            )
        )
    for address, actions in sorted(by_address.items()):  # actions of unchanged resources
        resources.append(ResourceView(address, "update", SYMBOL[ChangeKind.UPDATE], [], actions))
    runnable = plan.runnable
    return PlanView(
        revision=plan.revision,
        summary=summary_line(plan),
        resources=resources,
        runnable=runnable,
        disruptive=[a for a in runnable if a.disruptive],
        held=[a for a in plan.actions if a.status is not ActionStatus.PLANNED],
        errors=[d.render() for d in plan.diagnostics if d.severity is Severity.ERROR],
        warnings=[d.render() for d in plan.diagnostics if d.severity is not Severity.ERROR],
        params={a.id: params_text(a) for a in plan.actions},
    )


def apply_summary(record: ApplyRecord) -> dict[str, Any]:
    """Counts for the apply page's header: done out of those that run."""
    counts = record.counts
    held = counts.get("deferred", 0) + counts.get("refused", 0)
    total = sum(counts.values()) - held
    done = sum(counts.get(s, 0) for s in ("succeeded", "failed", "skipped", "interrupted"))
    return {"total": total, "done": done, "held": held}
