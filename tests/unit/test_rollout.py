"""Rollouts through the in-memory provider: waves bounded per group, the failure budget."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import pytest

from providers.memory import MemoryFleet, memory_factory
from reconciler.apply import ActionResult
from reconciler.engine import Engine
from reconciler.model import Action, ActionStatus, Plan
from reconciler.render import render_markdown, render_text

RACKS, PER_RACK = 2, 10
HEAD = """apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BMC_PASSWORD}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: tuned}
spec:
  attributes: {ProcTurboMode: Disabled}
---
apiVersion: metalform/v1
kind: Policy
metadata: {name: rollout}
spec:
  maxDisruptedPerGroup: {groupBy: rack, max: 20%}
  rollout: {maxFailures: 1}
"""
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: {name}, labels: {{rack: {rack}}}}}
spec:
  bmc: {{driver: redfish, address: "http://10.0.0.{i}", credential: bmc}}
  power: On
  bios: {{template: tuned}}
"""


def name(i: int) -> str:
    return f"n{i:02d}"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    servers = "".join(
        SERVER.format(name=name(i), rack=f"r{i // PER_RACK}", i=i + 1)
        for i in range(RACKS * PER_RACK)
    )
    (tmp_path / "inventory.yaml").write_text(HEAD + servers)
    return tmp_path


def fleet() -> MemoryFleet:
    state = {"power": "On", "bios.attributes.ProcTurboMode": "Enabled"}
    f = MemoryFleet({f"Server/{name(i)}": {"state": state} for i in range(RACKS * PER_RACK)})
    f.latency = {"bios.set": 0.01, "power.reset": 0.03}
    return f


def engine_for(f: MemoryFleet) -> Engine:
    return Engine(factories={"redfish": memory_factory(f)})


def waves_of(plan: Plan) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for action in plan.actions:
        out[action.wave].add(action.address)
    return out


def test_plan_splits_each_rack_into_waves(repo: Path) -> None:
    plan = engine_for(fleet()).plan(repo).plan
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


def test_apply_runs_wave_after_wave_within_the_group_limit(repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(repo).plan
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
    assert engine.plan(repo).plan.actions == []


def test_spent_failure_budget_skips_the_rest_of_the_rollout(repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(repo).plan
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
