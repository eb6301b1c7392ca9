"""The server survives its own death and its jobs' failures: what was left open is recorded
`interrupted` (or failed), its lock is free, its event stream ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from metalform.store import RunStatus, Store
from reconciler.model.notifications import NotificationRuleSpec
from tests.server.harness import TOKENS, GitRemote, Harness, wait_for
from tests.server.serving import ServeProcess, auth, write_config

pytestmark = pytest.mark.timeout(180)


def _planned(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (a["address"], a["operation"]) for a in plan["plan"]["actions"] if a["status"] == "planned"
    ]


def _events(text: str) -> list[tuple[int, str]]:
    """(id, type) of every event in an SSE body."""
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in lines:
            out.append((int(lines["id"]), lines["event"]))
    return out


def test_sigkill_during_an_apply_then_restart(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url)
    fleet = tmp_path / "fleet.json"
    with ServeProcess.memory(config, fleet, block_at=2) as first:
        plan = first.plan()
        assert plan["status"] == "succeeded", plan
        before = _planned(plan)
        started = first.post(f"/api/v1/plans/{plan['id']}/apply")
        assert started.status_code == 202, started.text
        apply_id = started.json()["applyId"]
        events_path = f"/api/v1/applies/{apply_id}/events"
        follower = requests.get(
            first.base + events_path, headers=auth("viewer"), stream=True, timeout=10
        )
        wait_for(fleet.with_suffix(".blocked").exists, 30, "the second action to start")
        seen = ""
        lines = follower.iter_lines(decode_unicode=True)
        while "action.updated" not in seen:
            seen += next(lines) + "\n"
        last_id = max(i for i, _ in _events(seen + "\n"))
        first.process.kill()  # SIGKILL: no clean-up of any kind
        first.wait(10)
        follower.close()
    blocked = fleet.with_suffix(".blocked").read_text(encoding="utf-8").split()
    with Store.open(f"sqlite:///{tmp_path / 'state' / 'metalform.db'}") as store:
        assert store.get_apply(apply_id).status is RunStatus.RUNNING  # as the kill left it

    with ServeProcess.memory(config, fleet) as second:
        applied = second.get(f"/api/v1/applies/{apply_id}").json()
        assert applied["status"] == "interrupted"
        assert "stopped before the apply finished" in applied["error"]
        assert applied["finishedAt"] is not None
        actions = {(a["address"], a["operation"]): a for a in applied["actions"]}
        assert actions[tuple(blocked)]["status"] == "interrupted"
        assert actions[tuple(blocked)]["error"] == "the apply was interrupted while it ran"
        done = [k for k, a in actions.items() if a["status"] == "succeeded"]
        assert done  # the first action finished before the kill (the fleet file has it)
        assert {a["status"] for a in actions.values()} == {"succeeded", "interrupted"}
        # the follower resumes where it was cut off: the last event comes, the stream ends
        resumed = second.get(events_path, headers={"Last-Event-ID": str(last_id)})
        assert _events(resumed.text)[-1][1] == "apply.interrupted"
        assert all(i > last_id for i, _ in _events(resumed.text))
        # a new plan plans what is left: the action that succeeded is not in it
        again = second.plan()
        left = _planned(again)
        assert tuple(blocked) in left and not set(done) & set(left)
        assert len(left) == len(before) - len(done)
        # the killed process's lock is gone: a new apply starts at once
        new = second.post(f"/api/v1/plans/{again['id']}/apply")
        assert new.status_code == 202, new.text
        finished = second.wait_status(
            f"/api/v1/applies/{new.json()['applyId']}", {"succeeded", "failed", "interrupted"}
        )
        assert finished["status"] == "succeeded", finished
        assert second.terminate() == 0
    log = second.log()
    assert "marked 0 plan(s) and 1 apply(ies)" in log
    assert "Traceback" not in log
    assert all(token not in first.log() + log for token in TOKENS.values())


def test_a_dying_plan_job_fails_its_plan(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(harness.store, "finish_plan", broken)
    created = harness.post("/api/v1/plans", role="planner", json={})
    assert created.status_code == 202
    harness.idle()
    plan = harness.get(f"/api/v1/plans/{created.json['id']}").json
    assert plan["status"] == "failed"
    assert plan["error"] == "internal error: RuntimeError"
    assert harness.events("plan.failed")[-1].plan_id == plan["id"]


def test_a_dying_apply_job_interrupts_its_apply_and_frees_the_lock(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = harness.plan()
    real = harness.store.finish_apply
    calls: list[str] = []

    def broken_once(apply_id: str, **kw: Any) -> Any:
        calls.append(apply_id)
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        return real(apply_id, **kw)

    monkeypatch.setattr(harness.store, "finish_apply", broken_once)
    applied = harness.apply(plan["id"])
    assert applied["status"] == "interrupted"
    assert applied["error"].startswith("interrupted: internal error: RuntimeError")
    stream = harness.get(f"/api/v1/applies/{applied['id']}/events")
    assert _events(stream.text)[-1][1] == "apply.interrupted"
    again = harness.plan()
    assert harness.apply(again["id"])["status"] == "succeeded"  # the lock was released


def test_shutdown_interrupts_what_it_queued_but_will_not_run(harness: Harness) -> None:
    harness.service.workers.shutdown(0)  # as at shutdown: queued jobs are dropped
    record = harness.service.store.create_plan(
        harness.service.repository, owner=harness.service.owner
    )
    harness.service.close(0)
    plan = harness.store.get_plan(record.id)
    assert plan.status is RunStatus.INTERRUPTED
    assert plan.error == "interrupted: the server shut down before it finished"


def test_a_running_server_interrupts_the_work_of_a_dead_replica(harness: Harness) -> None:
    """The periodic pass: another process (gone now) left a plan running."""
    record = harness.store.create_plan(harness.service.repository, owner="gone-host:1:2:3:4")
    mine = harness.store.create_plan(harness.service.repository, owner=harness.service.owner)
    found = harness.service.recover()
    assert [p.id for p in found.plans] == [record.id]
    assert harness.store.get_plan(mine.id).status is RunStatus.PENDING  # ours, alive
    assert harness.store.get_plan(record.id).status is RunStatus.INTERRUPTED


def test_notification_rules_cannot_name_interrupted_events() -> None:
    """Interruptions are found at start-up, before any rule is loaded: a rule naming them
    could never fire, so validation refuses it."""
    with pytest.raises(ValueError, match="events"):
        NotificationRuleSpec.model_validate({"channels": ["c"], "events": ["apply.interrupted"]})
    ok = NotificationRuleSpec.model_validate({"channels": ["c"], "events": ["apply.failed"]})
    assert [e.value for e in ok.events] == ["apply.failed"]


def _nesting_bomb(levels: int) -> str:
    return (
        "apiVersion: metalform/v1\nkind: BiosTemplate\nmetadata: {name: bomb}\n"
        f"spec: {{attributes: {{A: {'[' * levels}{']' * levels}}}}}\n"
    )


@pytest.mark.parametrize("levels", [5_000, 30_000])
def test_a_pushed_nesting_bomb_is_a_failed_plan_and_the_server_stays_up(
    tmp_path: Path, levels: int
) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url)
    with ServeProcess.metalform(config) as server:
        remote.write("bomb.yaml", _nesting_bomb(levels))
        remote.commit("a nesting bomb")
        remote.push("main")
        plan = server.plan()
        assert server.alive(), server.log()
        assert plan["status"] == "failed"
        assert "bomb.yaml" in plan["error"]
        assert server.get("/healthz").status_code == 200
        assert server.terminate() == 0
    assert "Traceback" not in server.log()
