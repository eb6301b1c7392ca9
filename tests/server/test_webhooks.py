"""Webhook deliveries: refusals start nothing, pushes plan, PRs get one comment, approvers apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import (
    GITHUB_REPO,
    GITLAB_PROJECT_ID,
    GITLAB_REPO,
    Harness,
    github_comment,
    github_pr,
    github_push,
    gitlab_mr,
    gitlab_note,
    gitlab_push,
    make_harness,
    wait_for,
)


def _history(h: Harness) -> list[dict[str, object]]:
    return list(h.get("/api/v1/history").json["items"])


def test_refused_deliveries_start_nothing(harness: Harness) -> None:
    sha = harness.remote.main
    bad_signature = harness.github("push", github_push(sha), secret="wrong")
    assert bad_signature.status_code == 401
    assert bad_signature.json["error"]["code"] == "UNAUTHORIZED"
    unsigned = harness.client.simulate_post(
        "/webhooks/github",
        body=json.dumps(github_push(sha)),
        headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"},
    )
    assert unsigned.status_code == 401
    oversized = harness.client.simulate_post(
        "/webhooks/github",
        body=b"x" * (5 * 1024 * 1024 + 1),
        headers={"X-GitHub-Event": "push", "Content-Type": "application/json"},
    )
    assert oversized.status_code == 413
    assert oversized.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    from webhooks.github import sign

    body = b"{not json"
    malformed = harness.client.simulate_post(
        "/webhooks/github",
        body=body,
        headers={
            "X-GitHub-Event": "push",
            "X-Hub-Signature-256": sign("gh-webhook-secret-for-tests", body),
        },
    )
    assert malformed.status_code == 400
    assert malformed.json["error"]["code"] == "INVALID_PAYLOAD"
    missing_field = harness.github("push", {"ref": "refs/heads/main"})
    assert missing_field.status_code == 400
    unknown = harness.github("star", {"action": "created"})
    assert unknown.status_code == 202
    assert unknown.json["status"] == "ignored"
    ping = harness.github("ping", {"zen": "Design for failure."})
    assert ping.status_code == 200
    assert ping.json["status"] == "pong"
    bad_token = harness.gitlab("Push Hook", gitlab_push(sha), token="nope")
    assert bad_token.status_code == 401
    harness.idle()
    assert _history(harness) == []
    rejected = harness.events("webhook.rejected")
    assert len(rejected) == 6
    assert "gh-webhook-secret" not in json.dumps([e.payload for e in rejected])
    metrics = harness.get("/metrics", role=None).text
    assert 'metalform_webhook_deliveries_total{forge="github",result="unauthorized"} 2.0' in metrics


def test_push_to_the_tracked_branch_plans_its_head_once(harness: Harness) -> None:
    remote = harness.remote
    sha = remote.commit("new commit")
    remote.push("main")
    first = harness.github("push", github_push(sha), delivery="delivery-1")
    assert first.status_code == 202
    assert first.json["status"] == "accepted"
    again = harness.github("push", github_push(sha), delivery="delivery-1")
    assert again.status_code == 200
    assert again.json["status"] == "duplicate"
    harness.idle()
    plans = _history(harness)
    assert len(plans) == 1
    assert plans[0]["revision"] == sha
    assert plans[0]["trigger"] == "webhook"
    assert harness.store.get_delivery("github", "delivery-1").result == "planned"  # type: ignore[union-attr]


def test_other_branches_and_repositories_are_ignored(harness: Harness) -> None:
    sha = harness.remote.main
    other = harness.github("push", github_push(sha, branch="dev"))
    assert other.json["status"] == "ignored"
    payload = github_push(sha)
    payload["repository"] = {**payload["repository"], "full_name": "someone/else"}
    assert harness.github("push", payload).json["status"] == "ignored"
    harness.idle()
    assert _history(harness) == []


@pytest.fixture
def auto_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from make_harness(tmp_path, monkeypatch, forge=None, autoApply=True)


def test_auto_apply_on_push(auto_harness: Harness) -> None:
    h = auto_harness
    sha = h.remote.main
    assert h.github("push", github_push(sha)).status_code == 202
    h.idle()
    wait_for(
        lambda: h.get("/api/v1/status").json["lastAppliedRevision"] == sha,
        what="the automatic apply",
    )
    assert [i["type"] for i in _history(h)] == ["apply", "plan"]
    assert h.fleet.systems["Server/a1"]["state"]["power"] == "On"


def _open_pr(h: Harness, number: int = 7) -> str:
    remote = h.remote
    remote.checkout("feature", new=True)
    remote.write(
        "extra.yaml",
        "apiVersion: metalform/v1\nkind: BiosTemplate\n"
        "metadata: {name: extra}\nspec: {attributes: {A: B}}\n",
    )
    sha = remote.commit("a change under review")
    remote.push("feature")
    assert h.github("pull_request", github_pr(number, sha)).status_code == 202
    h.idle()
    return sha


def test_pull_request_gets_one_comment_updated_in_place(forge_harness: Harness) -> None:
    h = forge_harness
    forge = h.forge
    assert forge is not None
    first_sha = _open_pr(h)
    comments = forge.comments("github", GITHUB_REPO, 7)
    assert len(comments) == 1
    assert comments[0].body.startswith("<!-- metalform:plan -->")
    assert f"Metalform plan for `{first_sha}`" in comments[0].body
    assert "/metalform apply" in comments[0].body
    states = [s.state for s in forge.statuses("github", first_sha)]
    assert states == ["pending", "success"]
    assert {s.context for s in forge.statuses("github")} == {"metalform/plan"}
    # a second push to the PR: the same comment, edited
    h.remote.write(
        "extra.yaml",
        "apiVersion: metalform/v1\nkind: BiosTemplate\n"
        "metadata: {name: extra}\nspec: {attributes: {A: C}}\n",
    )
    second_sha = h.remote.commit("review feedback")
    h.remote.push("feature")
    assert (
        h.github("pull_request", github_pr(7, second_sha, action="synchronize")).status_code == 202
    )
    h.idle()
    comments = forge.comments("github", GITHUB_REPO, 7)
    assert len(comments) == 1
    assert comments[0].updates == 1
    assert f"Metalform plan for `{second_sha}`" in comments[0].body
    assert [s.state for s in forge.statuses("github", second_sha)] == ["pending", "success"]
    # PR plans never move the tracked branch's status
    assert h.get("/api/v1/status").json["lastPlannedRevision"] is None


def test_pull_request_with_an_invalid_commit_fails_its_status(forge_harness: Harness) -> None:
    h = forge_harness
    assert h.forge is not None
    h.remote.checkout("feature", new=True)
    h.remote.write("bad.yaml", "kind: [\n")
    sha = h.remote.commit("broken")
    h.remote.push("feature")
    h.github("pull_request", github_pr(8, sha))
    h.idle()
    (comment,) = h.forge.comments("github", GITHUB_REPO, 8)
    assert "failed" in comment.body and "bad.yaml:" in comment.body
    assert [s.state for s in h.forge.statuses("github", sha)] == ["pending", "failure"]


def test_pull_request_from_a_fork_is_not_planned(forge_harness: Harness) -> None:
    h = forge_harness
    sha = h.remote.main
    result = h.github("pull_request", github_pr(9, sha, fork=True))
    assert result.json["status"] == "ignored"
    h.idle()
    assert _history(h) == []
    assert h.forge is not None
    (reply,) = h.forge.comments("github", GITHUB_REPO, 9)
    assert "forks" in reply.body


def test_apply_comment_from_an_allowed_approver(forge_harness: Harness) -> None:
    h = forge_harness
    assert h.forge is not None
    sha = _open_pr(h)
    h.forge.set_head("github", GITHUB_REPO, 7, sha)
    result = h.github("issue_comment", github_comment(7, "/metalform apply", "alice"))
    assert result.status_code == 202
    assert result.json["status"] == "accepted"
    h.idle()
    items = _history(h)
    assert [i["type"] for i in items] == ["apply", "plan"]
    assert items[0]["status"] == "succeeded"
    assert items[0]["who"] == "alice"
    bodies = [c.body for c in h.forge.comments("github", GITHUB_REPO, 7)]
    assert any("Applied plan" in b for b in bodies)
    assert h.fleet.systems["Server/a1"]["state"]["power"] == "On"


def test_apply_comment_from_anyone_else_is_refused(forge_harness: Harness) -> None:
    h = forge_harness
    assert h.forge is not None
    _open_pr(h)
    result = h.github("issue_comment", github_comment(7, "/metalform apply", "mallory"))
    assert result.status_code == 202
    assert result.json["status"] == "refused"
    h.idle()
    assert [i["type"] for i in _history(h)] == ["plan"]
    assert any(
        e.payload.get("reason") == "mallory may not run /metalform apply"
        for e in h.events("webhook.rejected")
    )
    bodies = [c.body for c in h.forge.comments("github", GITHUB_REPO, 7)]
    assert any("@mallory is not allowed" in b for b in bodies)
    assert h.fleet.calls == []


def test_apply_comment_for_an_outdated_plan_is_answered(forge_harness: Harness) -> None:
    h = forge_harness
    assert h.forge is not None
    _open_pr(h)
    h.forge.set_head("github", GITHUB_REPO, 7, "f" * 40)  # pushed since, not planned yet
    h.github("issue_comment", github_comment(7, "/metalform apply", "alice"))
    h.idle()
    assert [i["type"] for i in _history(h)] == ["plan"]
    bodies = [c.body for c in h.forge.comments("github", GITHUB_REPO, 7)]
    assert any("wait for the new plan" in b for b in bodies)


def test_gitlab_push_and_merge_request(forge_harness: Harness) -> None:
    h = forge_harness
    assert h.forge is not None
    sha = h.remote.commit("gitlab push")
    h.remote.push("main")
    assert h.gitlab("Push Hook", gitlab_push(sha)).status_code == 202
    mr_sha = _open_pr_commit(h)
    assert h.gitlab("Merge Request Hook", gitlab_mr(3, mr_sha)).status_code == 202
    h.idle()
    (note,) = h.forge.comments("gitlab", str(GITLAB_PROJECT_ID), 3)
    assert f"Metalform plan for `{mr_sha}`" in note.body
    assert [s.state for s in h.forge.statuses("gitlab", mr_sha)][-1] == "success"
    assert (
        h.gitlab("Note Hook", gitlab_note(3, "/metalform apply", "alice", mr_sha)).status_code
        == 202
    )
    h.idle()
    kinds = [(i["type"], i["status"]) for i in _history(h)]
    assert kinds[0] == ("apply", "succeeded")
    assert GITLAB_REPO in str(h.store.list_plans(limit=5).items[0].pull_request)


def _open_pr_commit(h: Harness) -> str:
    h.remote.checkout("feature", new=True)
    h.remote.write(
        "extra.yaml",
        "apiVersion: metalform/v1\nkind: BiosTemplate\n"
        "metadata: {name: extra}\nspec: {attributes: {A: B}}\n",
    )
    sha = h.remote.commit("mr change")
    h.remote.push("feature")
    return sha
