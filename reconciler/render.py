"""Rendering a plan for people: text (terminal) and Markdown (PR comments). JSON is the model."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from reconciler.model import Action, ActionStatus, Change, ChangeKind, Plan, Severity
from reconciler.secrets import REDACTOR, SENSITIVE

SYMBOL = {
    ChangeKind.CREATE: "+",
    ChangeKind.UPDATE: "~",
    ChangeKind.DELETE: "-",
    ChangeKind.NOOP: " ",
}
MARKDOWN_MARKER = "<!-- metalform:plan -->"


def value(v: Any) -> str:
    if v is None:
        return "(unset)"
    if isinstance(v, str):
        return v
    return json.dumps(v)


def _entry_value(entry: Any, which: str) -> str:
    return SENSITIVE if entry.sensitive else value(getattr(entry, which))


def params_text(action: Action) -> str:
    params = action.params
    if action.operation.startswith("service."):
        return ""  # the resource's diff above shows what the container gets
    if "userData" in params:  # shown as a block under the action (render_text)
        params = {k: v for k, v in params.items() if k != "userData"}
    if action.operation == "bios.set":
        return ", ".join(f"{k}={value(v)}" for k, v in params.get("attributes", {}).items())
    return ", ".join(f"{k}={value(v)}" for k, v in params.items())


def summary_line(plan: Plan) -> str:
    s = plan.summary
    runnable = len(plan.runnable)
    text = (
        f"Plan: {s.create} to create, {s.update} to update, {s.delete} to delete, "
        f"{s.noop} unchanged; {runnable} action{'s' if runnable != 1 else ''} to run"
    )
    extras = []
    if s.deferred:
        extras.append(f"{s.deferred} deferred")
    if s.refused:
        extras.append(f"{s.refused} refused")
    if s.unreachable:
        extras.append(f"{s.unreachable} unreachable, not planned")
    if s.accepted:
        extras.append(f"{s.accepted} with accepted drift")
    if s.suspended:
        extras.append(f"{s.suspended} suspended")
    if extras:
        text += f" ({', '.join(extras)})"
    return text + "." + rollout_text(plan)


def rollout_text(plan: Plan) -> str:
    """How the rollout runs: its waves and its failure budget ('' for a single plain wave)."""
    parts = []
    if plan.summary.waves > 1:
        parts.append(f"{plan.summary.waves} waves, each started when the previous one is done")
    budget = plan.failure_budget
    if budget is not None and plan.runnable:
        parts.append(
            f"failure budget {budget.max_failures} of {budget.resources} resources "
            f"({budget.policy}: maxFailures {budget.limit})"
        )
    return f" Rollout: {'; '.join(parts)}." if parts else ""


def _actions_by_address(plan: Plan) -> dict[str, list[Action]]:
    grouped: dict[str, list[Action]] = defaultdict(list)
    for action in plan.actions:
        grouped[action.address].append(action)
    return grouped


def _action_line(action: Action, waves: int = 1) -> str:
    line = f"#{action.id} {action.operation}"
    params = params_text(action)
    if params:
        line += f"  {params}"
    if action.depends_on:
        line += f"  (after {', '.join(f'#{d}' for d in action.depends_on)})"
    if action.disruptive:
        line += "  [disruptive]"
    if waves > 1:
        line += f"  [wave {action.wave}/{waves}]"
    if action.status is not ActionStatus.PLANNED:
        line += f"  {action.status.value.upper()}: {action.reason}"
    elif action.reason:  # a planned wait says what it waits for
        line += f"  ({action.reason})"
    return line


def _changes(plan: Plan) -> list[Change]:
    """Changes worth showing: drift, and accepted or suspended resources even without it."""
    return [c for c in plan.changes if c.action is not ChangeKind.NOOP or c.status is not None]


def _status_note(change: Change) -> str:
    """`ACCEPTED: why`, `SUSPENDED: why`, or why an acceptance no longer holds."""
    if change.status is not None:
        return f"  {change.status.value.upper()}: {change.reason}"
    return f"  ({change.reason})" if change.reason else ""


def render_text(plan: Plan) -> str:
    """The plan for a terminal or a log: resources with their diffs, actions, diagnostics."""
    out: list[str] = [
        f"Metalform plan of {plan.revision}" + (" (refresh only)" if plan.refresh_only else ""),
        "",
    ]
    by_address = _actions_by_address(plan)
    changes = _changes(plan)
    if not changes and not plan.actions:
        out.append("No changes. The live state matches the desired state.")
    for change in changes:
        source = f"  (from {change.source})" if change.source != "git" else ""
        out.append(f"{SYMBOL[change.action]} {change.address}{source}{_status_note(change)}")
        width = max((len(e.path) for e in change.diff), default=0)
        for entry in change.diff:
            before = _entry_value(entry, "before")
            if entry.pending is not None:
                before += f" (pending: {_entry_value(entry, 'pending')})"
            out.append(f"    {entry.path:<{width}}  {before} -> {_entry_value(entry, 'after')}")
        for action in by_address.get(change.address, []):
            out.append(f"    {_action_line(action, plan.summary.waves)}")
            user_data = action.params.get("userData")
            if isinstance(user_data, str):
                out.append("      user data:")
                out.extend(f"      | {line}" for line in user_data.splitlines())
        out.append("")
    diagnostics = plan.diagnostics
    if diagnostics:
        if out[-1] != "":
            out.append("")
        for d in diagnostics:
            out.append(d.render())
        out.append("")
    out.append(summary_line(plan))
    return REDACTOR("\n".join(out)) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(plan: Plan) -> str:
    """The plan as Markdown, for a pull-request comment."""
    s = plan.summary
    out = [MARKDOWN_MARKER, f"### Metalform plan for `{plan.revision}`", ""]
    out.append(
        f"**{s.create}** to create, **{s.update}** to update, **{s.delete}** to delete, "
        f"{s.noop} unchanged; **{len(plan.runnable)}** actions to run"
        + (f", {s.deferred} deferred" if s.deferred else "")
        + (f", {s.refused} refused" if s.refused else "")
        + (f", {s.accepted} with accepted drift" if s.accepted else "")
        + (f", {s.suspended} suspended" if s.suspended else "")
        + "."
        + rollout_text(plan)
    )
    out.append("")
    errors = [d for d in plan.diagnostics if d.severity is Severity.ERROR]
    if errors:
        out.append(f"> [!CAUTION]\n> {len(errors)} error(s): this plan cannot be applied as is.")
        out.append("")
    by_address = _actions_by_address(plan)
    for change in _changes(plan):
        out.append(
            f"<details open><summary><code>{SYMBOL[change.action]} {change.address}"
            f"</code> ({change.action.value}, {len(change.diff)} field(s))"
            f"{_md_cell(_status_note(change))}</summary>"
        )
        out.append("")
        if change.diff:
            out.append("| field | current | pending | desired |")
            out.append("|---|---|---|---|")
            for e in change.diff:
                pending = _entry_value(e, "pending") if e.pending is not None else ""
                out.append(
                    f"| `{_md_cell(e.path)}` | {_md_cell(_entry_value(e, 'before'))} | "
                    f"{_md_cell(pending)} | {_md_cell(_entry_value(e, 'after'))} |"
                )
            out.append("")
        actions = by_address.get(change.address, [])
        if actions:
            out.append("Actions:")
            for action in actions:
                out.append(f"- {_md_cell(_action_line(action, plan.summary.waves))}")
            out.append("")
        out.append("</details>")
        out.append("")
    if plan.diagnostics:
        out.append("#### Diagnostics")
        for d in plan.diagnostics:
            icon = "❌" if d.severity is Severity.ERROR else "⚠️"
            out.append(f"- {icon} {_md_cell(d.render())}")
        out.append("")
    if not _changes(plan) and not plan.actions:
        out.append("No changes. The live state matches the desired state.")
    return REDACTOR("\n".join(out)) + "\n"


def render_json(plan: Plan) -> str:
    return REDACTOR(plan.to_json()) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
