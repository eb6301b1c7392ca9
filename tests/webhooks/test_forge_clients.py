"""Forge clients against the wire-level fake GitHub/GitLab on loopback."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from reconciler.secrets import Secret
from tests.fakes.forge import FakeForge
from webhooks.errors import ForgeError
from webhooks.forge import (
    PLAN_MARKER,
    STATUS_CONTEXT,
    CommitState,
    ForgeClient,
    GitHubClient,
    GitLabClient,
    make_client,
)

REPO = "acme/metal-desired"
PROJECT = 42
SHA = "c4a6e8f0b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2"
PLAN_1 = "### Plan: 2 to update\n- Server/node-01 bios.attributes.ProcTurboMode"
PLAN_2 = "### Plan: 1 to update\n- Server/node-01 power"


@pytest.fixture
def gh(fake_forge: FakeForge) -> Iterator[GitHubClient]:
    with GitHubClient(fake_forge.github_token, fake_forge.github_url) as client:
        yield client


@pytest.fixture
def gl(fake_forge: FakeForge) -> Iterator[GitLabClient]:
    with GitLabClient(Secret(fake_forge.gitlab_token), fake_forge.gitlab_url) as client:
        yield client


def test_both_clients_are_forge_clients(gh: GitHubClient, gl: GitLabClient) -> None:
    assert isinstance(gh, ForgeClient)
    assert isinstance(gl, ForgeClient)


# --- GitHub --------------------------------------------------------------------------------


def test_github_plan_comment_is_created_then_updated_in_place(
    fake_forge: FakeForge, gh: GitHubClient
) -> None:
    first = gh.upsert_comment(REPO, 7, PLAN_1)
    second = gh.upsert_comment(REPO, 7, PLAN_2)
    assert first.created and not second.created
    assert second.id == first.id
    comments = fake_forge.comments("github", REPO, 7)
    assert len(comments) == 1, "two plans, one comment"
    assert comments[0].body == f"{PLAN_MARKER}\n{PLAN_2}"
    assert comments[0].updates == 1
    assert comments[0].author == fake_forge.bot_login
    methods = [(c.method, c.status) for c in fake_forge.calls if "comments" in c.path]
    assert methods == [("GET", 200), ("POST", 201), ("GET", 200), ("PATCH", 200)]


def test_github_stored_comment_id_skips_the_search(fake_forge: FakeForge, gh: GitHubClient) -> None:
    ref = gh.upsert_comment(REPO, 7, PLAN_1)
    gh.upsert_comment(REPO, 7, PLAN_2, comment_id=ref.id)
    assert [c.method for c in fake_forge.calls] == ["GET", "POST", "PATCH"]
    assert fake_forge.comments("github", REPO, 7)[0].body.endswith(PLAN_2)


def test_github_finds_its_comment_among_many_pages(fake_forge: FakeForge, gh: GitHubClient) -> None:
    for i in range(130):
        fake_forge.seed_comment("github", REPO, 9, f"comment {i}")
    ours = fake_forge.seed_comment("github", REPO, 9, f"{PLAN_MARKER}\nold plan", "metalform-bot")
    for i in range(90):
        fake_forge.seed_comment("github", REPO, 9, f"later comment {i}")
    # Someone quoting the marker mid-comment is not us.
    fake_forge.seed_comment("github", REPO, 9, f"> quoting\n{PLAN_MARKER}")
    ref = gh.upsert_comment(REPO, 9, PLAN_1)
    assert ref.id == ours.id and not ref.created
    assert len(fake_forge.comments("github", REPO, 9)) == 222
    pages = [c for c in fake_forge.calls if c.method == "GET"]
    assert len(pages) == 3


def test_github_deleted_comment_is_recreated(fake_forge: FakeForge, gh: GitHubClient) -> None:
    ref = gh.upsert_comment(REPO, 7, PLAN_1)
    fake_forge.delete_comment(ref.id)
    again = gh.upsert_comment(REPO, 7, PLAN_2, comment_id=ref.id)
    assert again.created and again.id != ref.id
    assert [c.body for c in fake_forge.comments("github", REPO, 7)] == [f"{PLAN_MARKER}\n{PLAN_2}"]


def test_github_long_plan_is_truncated_to_the_comment_limit(
    fake_forge: FakeForge, gh: GitHubClient
) -> None:
    gh.upsert_comment(REPO, 7, "x" * 100_000)
    body = fake_forge.comments("github", REPO, 7)[0].body
    assert len(body) == 65536
    assert body.startswith(PLAN_MARKER)
    assert "truncated" in body


def test_github_commit_statuses(fake_forge: FakeForge, gh: GitHubClient) -> None:
    gh.set_status(REPO, SHA, CommitState.PENDING, "Planning...")
    gh.set_status(
        REPO,
        SHA,
        CommitState.SUCCESS,
        "2 to update, 0 to create. " * 10,
        target_url="https://metalform.example/plans/12",
    )
    gh.set_status(REPO, SHA, CommitState.FAILURE, "3 errors in the desired state")
    statuses = fake_forge.statuses("github", SHA)
    assert [s.state for s in statuses] == ["pending", "success", "failure"]
    assert {s.context for s in statuses} == {STATUS_CONTEXT}
    assert statuses[1].target_url == "https://metalform.example/plans/12"
    assert len(statuses[1].description or "") == 140  # GitHub's limit; more is a 422
    assert statuses[0].repository == REPO


def test_github_head_sha(fake_forge: FakeForge, gh: GitHubClient) -> None:
    fake_forge.set_head("github", REPO, 7, SHA)
    assert gh.head_sha(REPO, 7) == SHA
    with pytest.raises(ForgeError) as info:
        gh.head_sha(REPO, 8)
    assert info.value.status == 404
    assert not info.value.temporary


def test_github_wrong_token_is_refused_by_the_forge(fake_forge: FakeForge) -> None:
    wrong = "ghs-not-the-right-token-987654321"
    with GitHubClient(wrong, fake_forge.github_url) as client, pytest.raises(ForgeError) as info:
        client.upsert_comment(REPO, 7, PLAN_1)
    message = str(info.value)
    assert info.value.status == 401
    assert "github" in message and "list comments" in message and "401" in message
    assert wrong not in message
    assert fake_forge.calls[-1].auth is False
    assert fake_forge.comments("github", REPO, 7) == []


def test_github_sends_the_bearer_token(fake_forge: FakeForge, gh: GitHubClient) -> None:
    gh.set_status(REPO, SHA, CommitState.PENDING, "Planning...")
    assert [c.auth for c in fake_forge.calls] == [True]


def test_github_server_error_is_clear_temporary_and_scrubbed(
    fake_forge: FakeForge, gh: GitHubClient, caplog: pytest.LogCaptureFixture
) -> None:
    # Even a forge that echoes the token back must not get it into our message.
    fake_forge.fail(500, f"internal error near Bearer {fake_forge.github_token}", method="POST")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ForgeError) as info:
        gh.set_status(REPO, SHA, CommitState.PENDING, "Planning...")
    error = info.value
    assert error.status == 500 and error.temporary
    assert str(error).startswith("github API set status failed: HTTP 500")
    assert fake_forge.github_token not in str(error)
    assert "(sensitive)" in str(error)
    assert fake_forge.github_token not in caplog.text
    assert fake_forge.github_token not in repr(gh)


def test_github_rate_limit_is_temporary_with_retry_after(
    fake_forge: FakeForge, gh: GitHubClient
) -> None:
    fake_forge.fail(403, "You have exceeded a secondary rate limit", headers={"Retry-After": "42"})
    with pytest.raises(ForgeError) as info:
        gh.set_status(REPO, SHA, CommitState.PENDING, "Planning...")
    assert info.value.temporary and info.value.retry_after == 42.0


def test_github_validation_error_is_permanent(fake_forge: FakeForge, gh: GitHubClient) -> None:
    fake_forge.fail(422, "Validation Failed")
    with pytest.raises(ForgeError) as info:
        gh.upsert_comment(REPO, 7, PLAN_1, comment_id=1)
    assert info.value.status == 422 and not info.value.temporary
    assert "update comment" in str(info.value)


def test_github_redirect_is_not_followed(fake_forge: FakeForge, gh: GitHubClient) -> None:
    # GitHub answers a renamed repository with a redirect; following it blindly would send
    # the token wherever Location points.
    moved = f"{fake_forge.github_url}/repositories/1296269/statuses/{SHA}"
    fake_forge.fail(307, "Temporary Redirect", headers={"Location": moved})
    with pytest.raises(ForgeError) as info:
        gh.set_status(REPO, SHA, CommitState.PENDING, "Planning...")
    assert info.value.status == 307
    assert "not followed" in str(info.value) and moved in str(info.value)
    assert len(fake_forge.calls) == 1


@pytest.mark.parametrize("repo", ["acme", "acme/x/y", "../etc/passwd", "acme/..", "a b/c"])
def test_github_refuses_repository_names_that_would_change_the_path(
    gh: GitHubClient, repo: str
) -> None:
    with pytest.raises(ValueError):
        gh.set_status(repo, SHA, CommitState.PENDING, "x")


def test_github_refuses_a_bad_sha(gh: GitHubClient) -> None:
    with pytest.raises(ValueError):
        gh.set_status(REPO, "../../issues", CommitState.PENDING, "x")


# --- GitLab --------------------------------------------------------------------------------


@pytest.mark.parametrize("project", [PROJECT, "infra/metal-desired"])
def test_gitlab_plan_note_is_created_then_updated_in_place(
    fake_forge: FakeForge, gl: GitLabClient, project: int | str
) -> None:
    first = gl.upsert_comment(project, 17, PLAN_1)
    second = gl.upsert_comment(project, 17, PLAN_2)
    assert first.created and not second.created and first.id == second.id
    notes = fake_forge.comments("gitlab", str(project), 17)
    assert len(notes) == 1
    assert notes[0].body == f"{PLAN_MARKER}\n{PLAN_2}"
    assert notes[0].updates == 1
    assert [c.method for c in fake_forge.calls] == ["GET", "POST", "GET", "PUT"]


def test_gitlab_finds_its_note_across_pages(fake_forge: FakeForge, gl: GitLabClient) -> None:
    for i in range(150):
        fake_forge.seed_comment("gitlab", str(PROJECT), 17, f"note {i}")
    ours = fake_forge.seed_comment("gitlab", str(PROJECT), 17, f"{PLAN_MARKER}\nold", "bot")
    ref = gl.upsert_comment(PROJECT, 17, PLAN_1)
    assert ref.id == ours.id and not ref.created
    assert len([c for c in fake_forge.calls if c.method == "GET"]) == 2


def test_gitlab_deleted_note_is_recreated(fake_forge: FakeForge, gl: GitLabClient) -> None:
    ref = gl.upsert_comment(PROJECT, 17, PLAN_1)
    fake_forge.delete_comment(ref.id)
    again = gl.upsert_comment(PROJECT, 17, PLAN_2, comment_id=ref.id)
    assert again.created
    assert len(fake_forge.comments("gitlab", str(PROJECT), 17)) == 1


def test_gitlab_commit_statuses(fake_forge: FakeForge, gl: GitLabClient) -> None:
    gl.set_status(PROJECT, SHA, CommitState.PENDING, "Planning...")
    # GitLab refuses pending -> pending with a 400; the client treats it as done.
    gl.set_status(PROJECT, SHA, CommitState.PENDING, "Planning again...")
    gl.set_status(
        PROJECT, SHA, CommitState.SUCCESS, "No changes", target_url="https://m.example/p/1"
    )
    # A new plan of the same commit: a finished status is followed by a new one.
    gl.set_status(PROJECT, SHA, CommitState.PENDING, "Planning...")
    gl.set_status(PROJECT, SHA, CommitState.ERROR, "BMC 10.0.0.7 unreachable")
    statuses = fake_forge.statuses("gitlab", SHA)
    assert [(s.state, s.context) for s in statuses] == [
        ("success", STATUS_CONTEXT),
        ("failed", STATUS_CONTEXT),
    ]
    assert statuses[0].target_url == "https://m.example/p/1"
    assert [c.status for c in fake_forge.calls] == [201, 400, 201, 201, 201]


def test_gitlab_other_bad_requests_still_raise(fake_forge: FakeForge, gl: GitLabClient) -> None:
    fake_forge.fail(400, "400 Bad request - sha is invalid")
    with pytest.raises(ForgeError) as info:
        gl.set_status(PROJECT, SHA, CommitState.PENDING, "Planning...")
    assert info.value.status == 400
    assert "gitlab API set status failed: HTTP 400" in str(info.value)


def test_gitlab_head_sha(fake_forge: FakeForge, gl: GitLabClient) -> None:
    fake_forge.set_head("gitlab", "infra/metal-desired", 17, SHA)
    assert gl.head_sha("infra/metal-desired", 17) == SHA


def test_gitlab_wrong_token_and_server_error(fake_forge: FakeForge) -> None:
    wrong = "glpat-wrong-token-000000000000"
    with GitLabClient(wrong, fake_forge.gitlab_url) as client, pytest.raises(ForgeError) as info:
        client.set_status(PROJECT, SHA, CommitState.PENDING, "x")
    assert info.value.status == 401 and wrong not in str(info.value)

    fake_forge.fail(502, "Bad Gateway")
    with GitLabClient(fake_forge.gitlab_token, fake_forge.gitlab_url) as client:
        with pytest.raises(ForgeError) as info:
            client.upsert_comment(PROJECT, 17, PLAN_1)
        assert info.value.temporary
        assert "gitlab API list notes failed: HTTP 502" in str(info.value)
        assert fake_forge.gitlab_token not in str(info.value)


# --- both ----------------------------------------------------------------------------------


def test_unreachable_forge_is_a_temporary_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = "ghs-unreachable-token-123456"
    client = GitHubClient(token, f"http://127.0.0.1:{port}/api/v3", timeout=2)
    with client, pytest.raises(ForgeError) as info:
        client.set_status(REPO, SHA, CommitState.PENDING, "x")
    assert info.value.status is None and info.value.temporary
    assert "no answer" in str(info.value)
    assert token not in str(info.value)


def test_make_client(fake_forge: FakeForge) -> None:
    with make_client("github", fake_forge.github_token, fake_forge.github_url) as client:
        assert isinstance(client, GitHubClient)
        client.set_status(REPO, SHA, CommitState.SUCCESS, "ok")
    with make_client("gitlab", fake_forge.gitlab_token) as client:
        assert isinstance(client, GitLabClient)
        assert client.api_url == "https://gitlab.com/api/v4"
    with pytest.raises(ValueError):
        make_client("bitbucket", "t")
    with pytest.raises(ValueError):
        GitHubClient("", fake_forge.github_url)
