"""Rollouts through the in-memory provider: waves bounded per group, the failure budget."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

from reconciler.apply import ActionResult
from reconciler.model import Action, ActionStatus, Plan
from reconciler.render import render_markdown, render_text
from tests.unit.rollout_fleet import PER_RACK, engine_for, fleet


def waves_of(plan: Plan) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for action in plan.actions:
        out[action.wave].add(action.address)
    return out


def test_plan_splits_each_rack_into_waves(rollout_repo: Path) -> None:
    plan = engine_for(fleet()).plan(rollout_repo).plan
    # 20% of a rack of 10: two servers of each rack per wave, five waves.
    assert plan.summary.waves == 5
    assert all(a.status is ActionStatus.PLANNED for a in plan.actions)
    for members in waves_of(plan).values():
        racks = [int(address.removeprefix("Server/n")) // PER_RACK for address in members]
        assert sorted(racks) == [0, 0, 1, 1]
    budget = plan.failure_budget
    assert budget is not None and budget.max_failures == 1 and budget.resources == 20
    text, markdown = render_text(plan), render_markdown(plan)
    rollout = (
        "Rollout: 5 waves, each started when the previous one is done; "
        "failure budget 1 of 20 resources (Policy/rollout: maxFailures 1)."
    )
    assert rollout in text and rollout in markdown
    assert "#21 power.reset  (after #1)  [disruptive]  [wave 1/5]" in text


def test_apply_runs_wave_after_wave_within_the_group_limit(rollout_repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(rollout_repo).plan
    lock = threading.Lock()
    events: list[tuple[int, bool]] = []  # (wave, started) in the order they happened
    down: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)

    def listen(action: Action, result: ActionResult) -> None:
        rack = f"r{int(action.address.removeprefix('Server/n')) // PER_RACK}"
        started = result.status is ActionStatus.RUNNING
        with lock:
            events.append((action.wave, started))
            if action.operation == "power.reset":
                down[rack] += 1 if started else -1
                peak[rack] = max(peak[rack], down[rack])

    result = engine.apply(plan, listener=listen)
    assert result.count(ActionStatus.SUCCEEDED) == 40
    for wave in range(2, 6):
        first_start = min(i for i, (w, s) in enumerate(events) if w == wave and s)
        last_end = max(i for i, (w, s) in enumerate(events) if w == wave - 1 and not s)
        assert last_end < first_start, f"wave {wave} started before wave {wave - 1} ended"
    assert peak == {"r0": 2, "r1": 2}
    assert engine.plan(rollout_repo).plan.actions == []


def test_spent_failure_budget_skips_the_rest_of_the_rollout(rollout_repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(rollout_repo).plan
    second = sorted(waves_of(plan)[2])
    for address in second[:2]:  # two failures in wave 2: one more than the budget of 1
        f.fail_operations[(address, "bios.set")] = "HTTP 500 from the BMC"
    result = engine.apply(plan)
    assert not result.ok
    by_wave: dict[int, list[ActionResult]] = defaultdict(list)
    for action in plan.actions:
        by_wave[action.wave].append(result.results[action.id])
    assert all(r.status is ActionStatus.SUCCEEDED for r in by_wave[1])
    later = [r for wave in (3, 4, 5) for r in by_wave[wave]]
    assert len(later) == 24
    for r in later:
        assert r.status is ActionStatus.SKIPPED
        assert r.error == (
            "failure budget spent: 2 of 20 resources failed, Policy/rollout allows 1 (1); "
            "the rest of the rollout is skipped"
        )
    touched = {address for address, _ in f.calls}
    assert touched == waves_of(plan)[1] | waves_of(plan)[2]
