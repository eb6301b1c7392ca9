"""What gates a rollout besides the group limit: a canary first wave, and health checks that
must pass before the next wave starts."""

from __future__ import annotations

import socket
from pathlib import Path

from reconciler.model import ActionStatus
from tests.unit.rollout_fleet import engine_for, fleet
from tests.unit.test_rollout import waves_of


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_policy(repo: Path, rollout: str) -> None:
    path = repo / "inventory.yaml"
    path.write_text(path.read_text().replace("rollout: {maxFailures: 1}", rollout))


def test_a_canary_makes_the_first_wave_that_small(rollout_repo: Path) -> None:
    with_policy(rollout_repo, "rollout: {canary: 1}")
    plan = engine_for(fleet()).plan(rollout_repo).plan
    waves = waves_of(plan)
    assert waves[1] == {"Server/n00"}
    # then 20% of each rack per wave again: 19 servers, 4 a wave
    assert [len(waves[w]) for w in sorted(waves)] == [1, 4, 4, 4, 4, 3]
    assert plan.failure_budget is None


def test_a_wave_whose_health_checks_fail_stops_the_rollout(rollout_repo: Path) -> None:
    path = rollout_repo / "inventory.yaml"
    check = f"  checks: [{{tcp: '127.0.0.1:{closed_port()}', timeout: 500ms}}]\n"
    text = path.read_text().replace("rollout: {maxFailures: 1}", "rollout: {maxFailures: 5}")
    marker = 'address: "http://10.0.0.3", credential: bmc}\n'  # n02
    assert marker in text
    path.write_text(text.replace(marker, marker + check))
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(rollout_repo).plan
    waves = waves_of(plan)
    assert "Server/n02" in waves[2]
    lines: list[str] = []
    result = engine.apply(
        plan,
        listener=lambda a, r: lines.append(f"{a.address} {a.operation} {r.status.value} {r.error}"),
    )
    by_address = {r.address: r for r in result.results.values() if r.address == "Server/n02"}
    last = max(
        (r for r in result.results.values() if r.address == "Server/n02"), key=lambda r: r.id
    )
    assert by_address and last.status is ActionStatus.FAILED
    assert last.error is not None and last.error.startswith("health check failed")
    for action in plan.actions:
        status = result.results[action.id].status
        if action.wave <= 2 and action.address != "Server/n02":
            assert status is ActionStatus.SUCCEEDED, action
        if action.wave >= 3:
            assert status is ActionStatus.SKIPPED
            error = result.results[action.id].error or ""
            assert error.startswith("wave 2 failed its health checks (Server/n02: ")
            assert error.endswith("the rest of the rollout is skipped")
    touched = {address for address, _ in f.calls}
    assert touched == waves[1] | waves[2]
    assert any("wave 2 failed its health checks" in line for line in lines)
