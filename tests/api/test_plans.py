"""Plans and applies through the API, against a real Git remote and the in-memory fleet."""

from __future__ import annotations

import threading

from tests.server.harness import Harness


def test_plan_of_the_tracked_branch(harness: Harness) -> None:
    plan = harness.plan()
    assert plan["status"] == "succeeded"
    assert plan["revision"] == harness.remote.main
    assert plan["ref"] == "main"
    assert plan["who"] == "planner"
    document = plan["plan"]
    assert [a["operation"] for a in document["actions"]] == [
        "bios.set",
        "bios.set",
        "power.on",
        "power.reset",
    ]
    assert "s3cret-for-tests" not in str(plan)


def test_plan_renders_as_markdown_and_text(harness: Harness) -> None:
    plan_id = harness.plan()["id"]
    markdown = harness.get(f"/api/v1/plans/{plan_id}", params={"format": "markdown"})
    assert markdown.headers["Content-Type"].startswith("text/markdown")
    assert markdown.text.startswith("<!-- metalform:plan -->")
    text = harness.get(f"/api/v1/plans/{plan_id}", params={"format": "text"})
    assert text.text.startswith(f"Metalform plan of {harness.remote.main}")
    bad = harness.get(f"/api/v1/plans/{plan_id}", params={"format": "pdf"})
    assert bad.status_code == 422


def test_plan_of_a_branch_and_of_a_commit(harness: Harness) -> None:
    remote = harness.remote
    remote.checkout("feature", new=True)
    remote.write(
        "extra.yaml",
        "apiVersion: metalform/v1\nkind: BiosTemplate\n"
        "metadata: {name: extra}\nspec: {attributes: {A: B}}\n",
    )
    sha = remote.commit("add a template")
    remote.push("feature")
    assert harness.plan("feature")["revision"] == sha
    assert harness.plan(remote.main)["revision"] == remote.main
    unknown = harness.plan("no-such-branch")
    assert unknown["status"] == "failed"
    assert "unknown revision 'no-such-branch'" in unknown["error"]


def test_bad_commit_fails_its_plan_with_positions_and_the_server_goes_on(harness: Harness) -> None:
    remote = harness.remote
    remote.write(
        "broken.yaml",
        "apiVersion: metalform/v1\nkind: Server\nmetadata:\n  name: x\n  name: y\nspec: {}\n",
    )
    remote.commit("a duplicate key")
    remote.push("main")
    failed = harness.plan()
    assert failed["status"] == "failed"
    assert "broken.yaml:5:3: error" in failed["error"]
    assert "duplicate key 'name'" in failed["error"]
    text = harness.get(f"/api/v1/plans/{failed['id']}", params={"format": "text"}).text
    assert "broken.yaml:5:3" in text
    assert len(harness.events("plan.failed")) == 1
    # fixed in the next commit: planning works again
    (remote.work / "infra" / "broken.yaml").unlink()
    remote.commit("fix")
    remote.push("main")
    assert harness.plan()["status"] == "succeeded"
    assert harness.get("/healthz", role=None).status_code == 200


def test_apply_runs_every_action_and_reports_progress(harness: Harness) -> None:
    plan = harness.plan()
    applied = harness.apply(plan["id"])
    assert applied["status"] == "succeeded", applied
    assert applied["planId"] == plan["id"]
    assert applied["who"] == "operator"
    assert [a["status"] for a in applied["actions"]] == ["succeeded"] * 4
    for action in applied["actions"]:
        assert action["startedAt"] and action["finishedAt"]
        assert action["durationSeconds"] is not None
    assert harness.fleet.systems["Server/a1"]["state"]["power"] == "On"
    status = harness.get("/api/v1/status").json
    assert status["lastAppliedRevision"] == harness.remote.main
    assert status["lastApplyId"] == applied["id"]
    a1 = harness.get("/api/v1/resources/Server/a1").json
    assert a1["sync"] == "Synced"
    assert a1["lastResult"] == "succeeded"


def test_failed_action_fails_the_apply(harness: Harness) -> None:
    harness.fleet.fail_operations[("Server/b2", "bios.set")] = "HTTP 500 from the BMC"
    applied = harness.apply(harness.plan()["id"])
    assert applied["status"] == "failed"
    assert "1 action(s) failed, 1 skipped" in applied["error"]
    by_op = {(a["address"], a["operation"]): a for a in applied["actions"]}
    assert "HTTP 500" in by_op[("Server/b2", "bios.set")]["error"]
    assert by_op[("Server/b2", "power.reset")]["status"] == "skipped"
    b2 = harness.get("/api/v1/resources/Server/b2").json
    assert (b2["sync"], b2["health"]) == ("OutOfSync", "Degraded")


def test_apply_refused_while_another_apply_runs(harness: Harness) -> None:
    plan = harness.plan()
    held = harness.store.try_apply_lock(harness.service.repository)
    assert held is not None
    try:
        result = harness.post(f"/api/v1/plans/{plan['id']}/apply")
        assert result.status_code == 409
        assert result.json["error"]["code"] == "APPLY_IN_PROGRESS"
    finally:
        held.release()
    assert harness.post(f"/api/v1/plans/{plan['id']}/apply").status_code == 202
    harness.idle()


def test_concurrent_apply_requests_start_one_apply(harness: Harness) -> None:
    plan = harness.plan()
    gate = threading.Event()
    original = harness.fleet.snapshot

    def slow(address: str):  # type: ignore[no-untyped-def]
        gate.wait(5)  # keep the first apply (and its lock) busy
        return original(address)

    harness.fleet.snapshot = slow  # type: ignore[method-assign]
    first = harness.post(f"/api/v1/plans/{plan['id']}/apply")
    second = harness.post(f"/api/v1/plans/{plan['id']}/apply")
    gate.set()
    harness.idle()
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json["error"]["code"] == "APPLY_IN_PROGRESS"


def test_stale_plans_are_refused(harness: Harness) -> None:
    plan = harness.plan()
    harness.remote.commit("moved on")
    harness.remote.push("main")
    harness.service.tracker.fetch()
    result = harness.post(f"/api/v1/plans/{plan['id']}/apply")
    assert result.status_code == 409
    assert result.json["error"]["code"] == "STALE_PLAN"
    assert "plan is stale" in result.json["error"]["message"]


def test_live_change_makes_the_apply_fail_stale(harness: Harness) -> None:
    plan = harness.plan()
    harness.fleet.systems["Server/a1"]["pending"]["bios.attributes.SysProfile"] = "Custom"
    applied = harness.apply(plan["id"])
    assert applied["status"] == "failed"
    assert applied["error"].startswith("plan is stale")
    assert harness.fleet.calls == []


def test_failed_plan_cannot_be_applied(harness: Harness) -> None:
    failed = harness.plan("no-such-branch")
    result = harness.post(f"/api/v1/plans/{failed['id']}/apply")
    assert result.status_code == 409
    assert result.json["error"]["code"] == "PLAN_NOT_APPLICABLE"


def test_apply_events_stream(harness: Harness) -> None:
    applied = harness.apply(harness.plan()["id"])
    stream = harness.get(f"/api/v1/applies/{applied['id']}/events")
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    blocks = [b for b in stream.text.split("\n\n") if b.startswith("id:")]
    types = [b.split("\n")[1].removeprefix("event: ") for b in blocks]
    assert types[0] == "apply.created"
    assert types[1] == "apply.started"
    assert types[-1] == "apply.succeeded"
    assert types.count("action.updated") == 8  # running then succeeded, for 4 actions
    ids = [int(b.split("\n")[0].removeprefix("id: ")) for b in blocks]
    assert ids == sorted(ids)
    resumed = harness.get(
        f"/api/v1/applies/{applied['id']}/events", headers={"Last-Event-ID": str(ids[-3])}
    )
    resumed_ids = [
        int(line.removeprefix("id: "))
        for line in resumed.text.splitlines()
        if line.startswith("id: ")
    ]
    assert resumed_ids == ids[-2:]
    bad = harness.get(f"/api/v1/applies/{applied['id']}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 400


def test_status_resources_and_history(harness: Harness) -> None:
    plan = harness.plan()
    status = harness.get("/api/v1/status").json
    assert status["lastPlannedRevision"] == harness.remote.main
    assert status["resources"]["byKind"] == {"BiosTemplate": 2, "Credential": 1, "Server": 2}
    assert status["drift"]["resources"] == 2
    assert status["repository"]["branch"] == "main"
    servers = harness.get("/api/v1/resources", params={"kind": "Server"}).json
    assert [r["address"] for r in servers["items"]] == ["Server/a1", "Server/b2"]
    out = harness.get("/api/v1/resources", params={"status": "OutOfSync"}).json
    assert out["count"] == 2
    assert harness.get("/api/v1/resources", params={"status": "Bogus"}).status_code == 422
    item = harness.get("/api/v1/resources/Server/a1").json
    assert item["lastPlan"]["id"] == plan["id"]
    assert [a["operation"] for a in item["lastPlan"]["actions"]] == ["bios.set", "power.on"]
    applied = harness.apply(plan["id"])
    history = harness.get("/api/v1/history", params={"limit": 1}).json
    assert [i["id"] for i in history["items"]] == [applied["id"]]
    older = harness.get(
        "/api/v1/history", params={"limit": 1, "before": history["nextBefore"]}
    ).json
    assert older["items"][0]["id"] == plan["id"]
    assert older["items"][0]["type"] == "plan"


def test_unreachable_servers_are_unknown_not_drifted(harness: Harness) -> None:
    harness.fleet.down.add("Server/b2")
    harness.plan()
    b2 = harness.get("/api/v1/resources/Server/b2").json
    assert (b2["sync"], b2["health"]) == ("Unknown", "Unreachable")
    unreachable = harness.get("/api/v1/resources", params={"status": "Unreachable"}).json
    assert [r["address"] for r in unreachable["items"]] == ["Server/b2"]
    assert harness.get("/api/v1/status").json["drift"]["resources"] == 1  # a1 only
