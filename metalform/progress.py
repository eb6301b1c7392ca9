"""Progress of an apply: a live bar on a terminal, one plain line per action otherwise."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from reconciler.apply import ActionResult, Listener
from reconciler.model import Action, ActionStatus, Plan
from reconciler.secrets import REDACTOR

STYLE = {ActionStatus.SUCCEEDED: "green", ActionStatus.FAILED: "red"}
SHOWN = (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.SKIPPED)


class Lines(Protocol):
    """Where plain progress lines go (the CLI's Output)."""

    tty: bool

    def line(self, text: str = "", style: str | None = None) -> None: ...


def result_line(action: Action, result: ActionResult, done: int | None, total: int) -> str:
    """`[ 3/40] #12 Server/n1 power.reset: succeeded (2.1s)`, and the error if any. An action
    the plan refused or deferred (`done` None) is reported without a counter: it does not run."""
    width = len(str(total))
    counter = f"[{done:>{width}}/{total}]" if done is not None else " " * (2 * width + 3)
    text = f"{counter} #{action.id} {action.address} {action.operation}: {result.status.value}"
    if result.seconds:
        text += f" ({result.seconds:.1f}s)"
    if result.error:
        text += f": {result.error}"
    return text


class PlainProgress:
    """One line per action as it ends: for logs, pipes and CI."""

    def __init__(self, out: Lines, runnable: Collection[int]) -> None:
        self.out = out
        self.runnable = frozenset(runnable)
        self.total = len(self.runnable)
        self.done = 0
        self._lock = threading.Lock()

    def __call__(self, action: Action, result: ActionResult) -> None:
        if result.status is ActionStatus.RUNNING:
            return
        with self._lock:
            done: int | None = None
            if action.id in self.runnable:
                self.done += 1
                done = self.done
            text = result_line(action, result, done, self.total)
        self.out.line(text, STYLE.get(result.status, "yellow"))


class LiveProgress:
    """A bar with counts per status, the wave running, elapsed and estimated time left.

    Failed actions are also printed above the bar, so their errors stay on the screen.
    """

    def __init__(self, stream: TextIO, plan: Plan) -> None:
        self.runnable = frozenset(a.id for a in plan.runnable)
        self.total = len(self.runnable)
        self.waves = plan.summary.waves
        self.console = Console(file=stream, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("Applying", total=self.total, counts="")
        self.counts: Counter[ActionStatus] = Counter()
        self.wave = 0
        self.done = 0
        self.running: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, action: Action, result: ActionResult) -> None:
        with self._lock:
            status = result.status
            if status is ActionStatus.RUNNING:
                self.wave = max(self.wave, action.wave)
                self.running.add(action.id)
            elif action.id in self.runnable:
                self.running.discard(action.id)
                self.done += 1
                self.counts[status] += 1
            self.progress.update(
                self.task,
                completed=self.done,
                description=self._description(),
                counts=self._counts(),
            )
            if status is ActionStatus.FAILED:
                line = result_line(action, result, self.done, self.total)
                self.progress.console.print(REDACTOR(line), style="red", markup=False)

    def _description(self) -> str:
        if self.waves > 1 and self.wave:
            return f"Applying, wave {self.wave}/{self.waves}"
        return "Applying"

    def _counts(self) -> str:
        shown = [f"{len(self.running)} running"] if self.running else []
        shown += [f"{self.counts[s]} {s.value}" for s in SHOWN if self.counts[s]]
        others = sum(n for s, n in self.counts.items() if s not in SHOWN)
        if others:
            shown.append(f"{others} not run")
        return ", ".join(shown)


@contextmanager
def apply_progress(out: Lines, stream: TextIO, plan: Plan) -> Iterator[Listener]:
    """The listener for an apply of `plan`: live on a terminal, plain lines otherwise."""
    if not out.tty:
        yield PlainProgress(out, [a.id for a in plan.runnable])
        return
    live = LiveProgress(stream, plan)
    with live.progress:
        yield live
