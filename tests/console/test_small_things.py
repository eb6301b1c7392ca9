"""Small things a user noticed: apply counts only the actions that run; headlines of CLI
mail name no empty id; '1 instance'."""

from __future__ import annotations

from typing import Any

from metalform.notify.event import Event
from metalform.notify.templates import Templates
from metalform.progress import PlainProgress
from reconciler.apply import ActionResult
from reconciler.model import Action, ActionStatus
from reconciler.model.events import EventType
from reconciler.planners.aggregate import _still_running
from reconciler.secrets import REDACTOR


class Lines:
    tty = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def line(self, text: str, style: Any = None) -> None:
        self.lines.append(text)


def test_apply_progress_counts_the_runnable_actions_only() -> None:
    out = Lines()
    progress = PlainProgress(out, [1])
    refused = Action(id=2, address="Aggregate/a", operation="aggregate.delete")
    ran = Action(id=1, address="Server/s", operation="power.on")
    progress(refused, ActionResult(2, "Aggregate/a", "aggregate.delete", ActionStatus.REFUSED))
    progress(ran, ActionResult(1, "Server/s", "power.on", ActionStatus.SUCCEEDED))
    assert out.lines[1].startswith("[1/1] #1 Server/s power.on: succeeded")
    assert "[" not in out.lines[0] and "#2 Aggregate/a aggregate.delete: refused" in out.lines[0]


def test_cli_headlines_name_no_empty_plan_or_apply_id() -> None:
    templates = Templates(REDACTOR)
    created = templates.headline(Event(EventType.PLAN_CREATED, repository="infra"))
    assert created == "Plan created for infra"
    started = templates.headline(Event(EventType.APPLY_STARTED))
    assert started == "Apply started"
    served = templates.headline(Event(EventType.PLAN_CREATED, plan_id="p-1"))
    assert served == "Plan p-1 created"


def test_one_instance_is_singular() -> None:
    assert _still_running("h1", 1) == "host h1 still runs 1 instance"
    assert _still_running("h1", 3) == "host h1 still runs 3 instances"
