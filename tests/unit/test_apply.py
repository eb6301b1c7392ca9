"""Apply against the in-memory provider: convergence, failures, skips, resumption, staleness."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine
from reconciler.errors import StalePlanError
from reconciler.model import ActionStatus
from tests.fixtures.ordering import CASE, fleet


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    shutil.copytree(CASE, tmp_path / "repo")
    return tmp_path / "repo"


def engine_for(f: MemoryFleet) -> Engine:
    factory = memory_factory(f)
    return Engine(factories={"redfish": factory, "ipmi": factory})


def test_apply_converges_and_second_plan_is_empty(repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(repo).plan
    assert [a.operation for a in plan.actions] == [
        "bios.set",
        "bios.set",
        "power.on",
        "power.reset",
    ]
    result = engine.apply(plan)
    assert result.count(ActionStatus.SUCCEEDED) == 4
    assert f.systems["Server/a1"]["state"]["power"] == "On"
    assert f.systems["Server/b2"]["state"]["bios.attributes.ProcVirtualization"] == "Enabled"
    again = engine.plan(repo).plan
    assert again.actions == []
    assert not again.has_changes


def test_failed_action_skips_dependants_not_the_rest(repo: Path) -> None:
    f = fleet()
    f.fail_operations[("Server/b2", "bios.set")] = "HTTP 500 from the BMC"
    engine = engine_for(f)
    plan = engine.plan(repo).plan
    result = engine.apply(plan)
    by_op = {(r.address, r.operation): r for r in result.results.values()}
    assert by_op[("Server/b2", "bios.set")].status is ActionStatus.FAILED
    assert "HTTP 500" in (by_op[("Server/b2", "bios.set")].error or "")
    assert by_op[("Server/b2", "power.reset")].status is ActionStatus.SKIPPED
    assert by_op[("Server/a1", "power.on")].status is ActionStatus.SUCCEEDED
    assert ("Server/b2", "power.reset") not in f.calls
    # Resumable: re-planning plans only what is left.
    del f.fail_operations[("Server/b2", "bios.set")]
    left = engine.plan(repo).plan
    assert {(a.address, a.operation) for a in left.actions} == {
        ("Server/b2", "bios.set"),
        ("Server/b2", "power.reset"),
    }


def test_readback_mismatch_fails_the_action(repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(repo).plan
    # The BMC accepts the request but the setting does not stick: read-back must catch it.
    original = f.snapshot

    def lying_snapshot(address: str):  # type: ignore[no-untyped-def]
        live = original(address)
        if address == "Server/a1":
            return live.model_copy(update={"pending": {}})
        return live

    f.snapshot = lying_snapshot  # type: ignore[method-assign]
    plan = plan.model_copy(
        update={
            "actions": [
                a.model_copy(update={"expect": a.expect.model_copy(update={"settle_seconds": 0})})
                for a in plan.actions
            ]
        }
    )
    result = engine.apply(plan, check=False)
    a1 = {r.operation: r for r in result.results.values() if r.address == "Server/a1"}
    assert a1["bios.set"].status is ActionStatus.FAILED
    assert "expected 'PerfOptimized'" in (a1["bios.set"].error or "")
    assert a1["power.on"].status is ActionStatus.SKIPPED


def test_stale_when_git_changed(repo: Path) -> None:
    engine = engine_for(fleet())
    plan = engine.plan(repo).plan
    (repo / "inventory.yaml").write_text((repo / "inventory.yaml").read_text() + "\n# edit\n")
    with pytest.raises(StalePlanError, match="plan is stale: the revision is now"):
        engine.apply(plan)


def test_stale_when_live_state_changed(repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(repo).plan
    f.systems["Server/a1"]["pending"]["bios.attributes.SysProfile"] = "Custom"  # by hand
    with pytest.raises(StalePlanError, match="Server/a1 changed"):
        engine.apply(plan)
    assert f.calls == []


def test_unreachable_server_fails_its_actions_only(repo: Path) -> None:
    f = fleet()
    engine = engine_for(f)
    plan = engine.plan(repo).plan
    f.down.add("Server/b2")
    result = engine.apply(plan, check=False)
    statuses = {(r.address, r.operation): r.status for r in result.results.values()}
    assert statuses[("Server/b2", "bios.set")] is ActionStatus.FAILED
    assert statuses[("Server/b2", "power.reset")] is ActionStatus.SKIPPED
    assert statuses[("Server/a1", "power.on")] is ActionStatus.SUCCEEDED
