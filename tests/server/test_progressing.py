"""Health while an apply runs: `Progressing` for what it touches, then the outcome; an
interrupted apply leaves its resources' health unknown, not `Progressing` forever."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.harness import GitRemote, wait_for
from tests.server.serving import ServeProcess, write_config

pytestmark = pytest.mark.timeout(300)


def health(server: ServeProcess) -> dict[str, str]:
    items = server.get("/api/v1/resources", params={"kind": "Server"}).json()["items"]
    return {r["address"]: r["health"] for r in items}


def start_blocked_apply(server: ServeProcess, fleet: Path) -> tuple[str, set[str]]:
    plan = server.plan()
    assert plan["status"] == "succeeded", plan
    touched = {a["address"] for a in plan["plan"]["actions"] if a["status"] == "planned"}
    started = server.post(f"/api/v1/plans/{plan['id']}/apply")
    assert started.status_code == 202, started.text
    wait_for(fleet.with_suffix(".blocked").exists, 30, "the apply to block")
    return str(started.json()["applyId"]), touched


def test_resources_are_progressing_while_the_apply_touches_them(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url)
    fleet = tmp_path / "fleet.json"
    with ServeProcess.memory(config, fleet, block_at=1) as server:
        apply_id, touched = start_blocked_apply(server, fleet)
        assert touched
        during = health(server)
        assert {a for a, h in during.items() if h == "Progressing"} == touched
        overview = server.get("/api/v1/status").json()["resources"]["byHealth"]
        assert overview["Progressing"] == len(touched)
        fleet.with_suffix(".release").touch()
        server.wait_status(f"/api/v1/applies/{apply_id}", {"succeeded"})
        after = health(server)
        assert all(after[a] == "Healthy" for a in touched), after
        assert server.terminate() == 0


def test_an_interrupted_apply_leaves_no_resource_progressing(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url)
    fleet = tmp_path / "fleet.json"
    with ServeProcess.memory(config, fleet, block_at=1) as first:
        apply_id, touched = start_blocked_apply(first, fleet)
        first.kill()
    with ServeProcess.memory(config, fleet) as second:
        record = second.get(f"/api/v1/applies/{apply_id}").json()
        assert record["status"] == "interrupted"
        after = health(second)
        # (the new server's start-up plan has read their health again since)
        assert touched and not [a for a in touched if after[a] == "Progressing"], after
        text = second.get(f"/api/v1/plans/{record['planId']}", params={"format": "text"})
        assert text.status_code == 200  # the plan itself succeeded: it renders
        assert second.terminate() == 0


def test_the_start_up_plan_is_a_poll_not_a_drift_check(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url)
    with ServeProcess.memory(config, tmp_path / "fleet.json") as server:

        def startup() -> list[tuple[str, str]]:
            items = server.get("/api/v1/plans").json()["items"]
            return [(p["trigger"], p["who"]) for p in items]

        assert wait_for(startup, 30, "the start-up plan") == [("poll", "startup")]
        assert server.terminate() == 0
