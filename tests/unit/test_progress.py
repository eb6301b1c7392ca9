"""Apply progress: plain lines when the output is not a terminal, a live bar when it is."""

from __future__ import annotations

import io
import re
from pathlib import Path

from metalform.cli import Output
from metalform.progress import LiveProgress, PlainProgress, apply_progress
from tests.unit.rollout_fleet import engine_for, fleet


def test_plain_lines_when_not_a_terminal(rollout_repo: Path) -> None:
    f = fleet()
    f.fail_operations[("Server/n00", "bios.set")] = "HTTP 500 from the BMC"
    engine = engine_for(f)
    plan = engine.plan(rollout_repo).plan
    stream = io.StringIO()
    out = Output(stream=stream)
    with apply_progress(out, stream, plan) as listener:
        assert isinstance(listener, PlainProgress)
        engine.apply(plan, listener=listener)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 40  # one per action, as each ends; no escape codes, no bar
    assert not any("\x1b" in line for line in lines)
    assert [int(re.match(r"\[ ?(\d+)/40\]", line).group(1)) for line in lines] == list(  # type: ignore[union-attr]
        range(1, 41)
    )
    assert "#1 Server/n00 bios.set: failed" in stream.getvalue()
    assert ": HTTP 500 from the BMC" in stream.getvalue()
    assert re.search(
        r"#21 Server/n00 power\.reset: skipped: action 1 \(bios\.set\) failed", stream.getvalue()
    )


def test_live_bar_counts_statuses_and_waves(rollout_repo: Path) -> None:
    f = fleet()
    f.fail_operations[("Server/n00", "bios.set")] = "HTTP 500 from the BMC"
    engine = engine_for(f)
    plan = engine.plan(rollout_repo).plan
    live = LiveProgress(io.StringIO(), plan)
    engine.apply(plan, listener=live)
    assert live.done == 40
    assert live._counts() == "38 succeeded, 1 failed, 1 skipped"
    assert live._description() == "Applying, wave 5/5"
