"""GitHub: signature verification and parsing, on real payloads from @octokit/webhooks-examples.

Every `push` and `pull_request` example is signed, verified and parsed, and the parsed event is
compared with what the payload says, field by field.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from typing import Any

import pytest

from webhooks import github
from webhooks.errors import PayloadError
from webhooks.events import ZERO_SHA, Command, CommentAction, EventKind, Forge, PRAction

SECRET = b"correct horse battery staple"
HANDLED = {"push", "pull_request", "issue_comment", "ping"}
Examples = dict[str, list[dict[str, Any]]]


def wire(payload: dict[str, Any]) -> bytes:
    """The body as GitHub sends it: compact JSON, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def headers(event: str, body: bytes, delivery: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958"):
    values = {
        "x-github-event": event,
        "x-hub-signature-256": github.sign(SECRET, body),
    }
    if delivery is not None:
        values["x-github-delivery"] = delivery
    return lambda name: values.get(name.lower())


def label(payload: dict[str, Any], index: int) -> str:
    return f"example {index} ({payload.get('action', payload.get('ref'))})"


# --- the package itself --------------------------------------------------------------------


def test_examples_package_has_the_expected_events(github_webhook_examples: Examples) -> None:
    # The counts PEERS.md documents for 7.6.x; fewer would mean a broken or wrong download.
    assert len(github_webhook_examples["push"]) >= 7
    assert len(github_webhook_examples["pull_request"]) >= 29
    assert github_webhook_examples["issue_comment"]
    assert github_webhook_examples["ping"]


# --- verify --------------------------------------------------------------------------------


def test_every_real_payload_verifies_and_a_tampered_one_does_not(
    github_webhook_examples: Examples,
) -> None:
    checked = 0
    for name in ("push", "pull_request", "issue_comment", "ping"):
        for payload in github_webhook_examples[name]:
            body = wire(payload)
            signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
            assert github.sign(SECRET, body) == signature
            assert github.verify(SECRET, body, signature)
            assert github.verify(SECRET.decode(), body, signature)  # str secret from config
            tampered = body.replace(b'"sender":{', b'"sender":{"x":1,', 1)
            assert tampered != body
            assert not github.verify(SECRET, tampered, signature)
            assert not github.verify(SECRET, body + b" ", signature)
            assert not github.verify(b"another secret", body, signature)
            checked += 1
    assert checked >= 7 + 29


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha256",
        "sha1=" + hmac.new(SECRET, b"{}", hashlib.sha1).hexdigest(),  # legacy X-Hub-Signature
        "sha512=" + hmac.new(SECRET, b"{}", hashlib.sha512).hexdigest(),
        "sha256=" + "0" * 64,
        "sha256=" + hmac.new(SECRET, b"{}", hashlib.sha256).hexdigest()[:-1],
        "sha256=é" + hmac.new(SECRET, b"{}", hashlib.sha256).hexdigest()[1:],  # non-ASCII
        "SHA256=" + hmac.new(SECRET, b"{}", hashlib.sha256).hexdigest(),
    ],
)
def test_bad_or_missing_signature_is_refused(header: str | None) -> None:
    assert github.verify(SECRET, b"{}", header) is False


def test_signature_hex_case_and_surrounding_space_do_not_matter() -> None:
    signature = github.sign(SECRET, b"{}")
    assert github.verify(SECRET, b"{}", "sha256=" + signature[7:].upper())
    assert github.verify(SECRET, b"{}", f" {signature} ")


def test_empty_secret_fails_closed() -> None:
    # A missing webhook secret must never turn into "accept everything signed with nothing".
    assert not github.verify(b"", b"{}", github.sign(b"", b"{}"))


def test_receiver_authenticates_from_headers(github_webhook_examples: Examples) -> None:
    body = wire(github_webhook_examples["push"][0])
    assert github.WEBHOOK.authenticate(SECRET, headers("push", body), body)
    assert not github.WEBHOOK.authenticate(b"wrong", headers("push", body), body)
    assert not github.WEBHOOK.authenticate(SECRET, lambda name: None, body)


# --- parse: push ---------------------------------------------------------------------------


def test_every_push_example_parses_to_what_the_payload_says(
    github_webhook_examples: Examples,
) -> None:
    examples = github_webhook_examples["push"]
    assert len(examples) >= 7
    for index, payload in enumerate(examples):
        body = wire(payload)
        event = github.WEBHOOK.parse(headers("push", body, f"delivery-{index}"), body)
        ref = payload["ref"]
        expected = {
            "kind": EventKind.PUSH,
            "forge": Forge.GITHUB,
            "delivery_id": f"delivery-{index}",
            "event_name": "push",
            "repository": payload["repository"]["full_name"],
            "repository_id": payload["repository"]["id"],
            "clone_url": payload["repository"]["clone_url"],
            "ref": ref,
            "branch": ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else None,
            "tag": ref[len("refs/tags/") :] if ref.startswith("refs/tags/") else None,
            "head_sha": None if payload["after"] == ZERO_SHA else payload["after"],
            "before_sha": None if payload["before"] == ZERO_SHA else payload["before"],
            "created": payload["created"],
            "deleted": payload["deleted"],
            "sender": payload["sender"]["login"],
            "pr_number": None,
            "command": None,
        }
        actual = {key: getattr(event, key) for key in expected}
        assert actual == expected, label(payload, index)
        if payload["deleted"]:
            assert event.head_sha is None, "a deleted ref has no head"
        elif payload["head_commit"]:
            assert event.head_sha == payload["head_commit"]["id"]


# --- parse: pull_request -------------------------------------------------------------------


def test_every_pull_request_example_parses_to_what_the_payload_says(
    github_webhook_examples: Examples,
) -> None:
    examples = github_webhook_examples["pull_request"]
    assert len(examples) >= 29
    seen_actions = set()
    for index, payload in enumerate(examples):
        body = wire(payload)
        event = github.parse("pull_request", f"d-{index}", body)
        pr = payload["pull_request"]
        action = payload["action"]
        if action == "closed":
            neutral = PRAction.MERGED if pr["merged"] else PRAction.CLOSED
        else:
            neutral = {
                "opened": PRAction.OPENED,
                "synchronize": PRAction.SYNCHRONIZE,
                "reopened": PRAction.REOPENED,
                "ready_for_review": PRAction.READY_FOR_REVIEW,
                "edited": PRAction.EDITED,
            }.get(action, PRAction.OTHER)
        head_repo = (pr["head"]["repo"] or {}).get("full_name")
        expected = {
            "kind": EventKind.PULL_REQUEST,
            "repository": payload["repository"]["full_name"],
            "clone_url": payload["repository"]["clone_url"],
            "pr_number": payload["number"],
            "pr_action": neutral,
            "forge_action": action,
            "head_sha": pr["head"]["sha"],
            "head_branch": pr["head"]["ref"],
            "base_branch": pr["base"]["ref"],
            "before_sha": payload.get("before"),
            "from_fork": head_repo != payload["repository"]["full_name"],
            "sender": payload["sender"]["login"],
            "comment_body": None,
            "command": None,
        }
        actual = {key: getattr(event, key) for key in expected}
        assert actual == expected, label(payload, index)
        assert event.wants_pr_plan == (action in {"opened", "synchronize", "reopened"})
        seen_actions.add(action)
    assert {"opened", "synchronize", "reopened", "closed"} <= seen_actions


def test_merged_pull_request_and_fork(github_webhook_examples: Examples) -> None:
    closed = next(p for p in github_webhook_examples["pull_request"] if p["action"] == "closed")
    merged = copy.deepcopy(closed)
    merged["pull_request"]["merged"] = True
    assert github.parse("pull_request", "d", wire(merged)).pr_action is PRAction.MERGED
    assert github.parse("pull_request", "d", wire(closed)).pr_action is PRAction.CLOSED

    opened = next(p for p in github_webhook_examples["pull_request"] if p["action"] == "opened")
    fork = copy.deepcopy(opened)
    fork["pull_request"]["head"]["repo"]["full_name"] = "mallory/Hello-World"
    assert github.parse("pull_request", "d", wire(fork)).from_fork is True
    gone = copy.deepcopy(opened)
    gone["pull_request"]["head"]["repo"] = None  # the fork was deleted
    assert github.parse("pull_request", "d", wire(gone)).from_fork is True


# --- parse: issue_comment ------------------------------------------------------------------


def test_comments_on_issues_are_ignored(github_webhook_examples: Examples) -> None:
    examples = github_webhook_examples["issue_comment"]
    assert all("pull_request" not in p["issue"] for p in examples)
    for payload in examples:
        event = github.parse("issue_comment", "d", wire(payload))
        assert event.kind is EventKind.IGNORED
        assert "not on a pull request" in (event.ignored_reason or "")
        assert event.repository == payload["repository"]["full_name"]
        assert event.command is None


def _on_pull_request(payload: dict[str, Any], body: str, action: str = "created"):
    comment = copy.deepcopy(payload)
    comment["action"] = action
    comment["comment"]["body"] = body
    comment["issue"]["pull_request"] = {
        "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/1",
        "html_url": "https://github.com/Codertocat/Hello-World/pull/1",
    }
    return comment


def test_every_comment_example_on_a_pull_request_parses(github_webhook_examples: Examples) -> None:
    for payload in github_webhook_examples["issue_comment"]:
        on_pr = _on_pull_request(payload, payload["comment"]["body"], payload["action"])
        event = github.parse("issue_comment", "d", wire(on_pr))
        expected = {
            "kind": EventKind.COMMENT,
            "repository": payload["repository"]["full_name"],
            "pr_number": payload["issue"]["number"],
            "comment_id": payload["comment"]["id"],
            "comment_body": payload["comment"]["body"],
            "comment_author": payload["comment"]["user"]["login"],
            "comment_action": CommentAction(payload["action"]),
            "sender": payload["sender"]["login"],
            "command": None,
            "head_sha": None,  # GitHub does not say; the server asks the API
        }
        assert {key: getattr(event, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("body", "action", "command"),
    [
        ("/metalform apply", "created", Command.APPLY),
        ("/metalform plan\nthe BMC was down", "created", Command.PLAN),
        ("/metalform apply", "edited", None),  # edits never trigger: see the parser
        ("/metalform apply", "deleted", None),
        ("I think we should /metalform apply", "created", None),
    ],
)
def test_comment_commands(
    github_webhook_examples: Examples, body: str, action: str, command: Command | None
) -> None:
    payload = _on_pull_request(github_webhook_examples["issue_comment"][0], body, action)
    event = github.parse("issue_comment", "d", wire(payload))
    assert event.kind is EventKind.COMMENT
    assert event.command is command
    assert event.is_apply_command == (command is Command.APPLY)
    assert event.is_plan_command == (command is Command.PLAN)


# --- ping, unknown events, delivery ids ----------------------------------------------------


def test_ping_examples(github_webhook_examples: Examples) -> None:
    for payload in github_webhook_examples["ping"]:
        event = github.parse("ping", "d", wire(payload))
        assert event.kind is EventKind.PING
        assert event.repository == (payload.get("repository") or {}).get("full_name")


def test_every_other_real_event_is_ignored(github_webhook_examples: Examples) -> None:
    others = {name: ex for name, ex in github_webhook_examples.items() if name not in HANDLED}
    assert len(others) > 20
    for name, examples in others.items():
        for payload in examples:
            event = github.parse(name, "d", wire(payload))
            assert event.kind is EventKind.IGNORED, name
            assert name in (event.ignored_reason or "")
            assert event.command is None


def test_delivery_id_falls_back_to_a_digest_of_the_body(github_webhook_examples: Examples) -> None:
    body = wire(github_webhook_examples["push"][0])
    first = github.WEBHOOK.parse(headers("push", body, delivery=None), body)
    again = github.WEBHOOK.parse(headers("push", body, delivery=None), body)
    assert first.delivery_id.startswith("sha256:")
    assert first.delivery_id == again.delivery_id


# --- malformed deliveries ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "JSON list, not an object"),
        (b"null", "not an object"),
        (b"payload=%7B%7D", "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
def test_malformed_json_is_a_payload_error(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError) as info:
        github.parse("push", "d", body)
    assert message in str(info.value)
    assert info.value.http_status == 400


def _drop(payload: dict[str, Any], path: str) -> dict[str, Any]:
    broken = copy.deepcopy(payload)
    *parents, leaf = path.split(".")
    node = broken
    for key in parents:
        node = node[key]
    del node[leaf]
    return broken


@pytest.mark.parametrize(
    ("event", "path"),
    [
        ("push", "ref"),
        ("push", "after"),
        ("push", "repository"),
        ("push", "repository.clone_url"),
        ("push", "sender"),
        ("pull_request", "pull_request.head.sha"),
        ("pull_request", "pull_request.base.ref"),
        ("pull_request", "number"),
        ("issue_comment", "comment.user"),
        ("issue_comment", "issue.number"),
    ],
)
def test_missing_required_field_is_a_payload_error(
    github_webhook_examples: Examples, event: str, path: str
) -> None:
    payload = github_webhook_examples[event][0]
    if event == "issue_comment":
        payload = _on_pull_request(payload, "/metalform apply")
    with pytest.raises(PayloadError) as info:
        github.parse(event, "d", wire(_drop(payload, path)))
    assert path in str(info.value)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("after", "not-a-sha-at-all"),
        ("ref", "refs/heads/--upload-pack=touch${IFS}pwned"),
        ("ref", "refs/heads/a\nb"),
        ("sender.login", "evil\x00user"),
    ],
)
def test_dangerous_values_are_refused_without_being_echoed(
    github_webhook_examples: Examples, path: str, value: str
) -> None:
    payload = copy.deepcopy(github_webhook_examples["push"][4])
    node = payload
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    with pytest.raises(PayloadError) as info:
        github.parse("push", "d", wire(payload))
    assert value not in str(info.value)


def test_missing_event_header_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="X-GitHub-Event"):
        github.WEBHOOK.parse(lambda name: None, b"{}")
    with pytest.raises(PayloadError, match="X-GitHub-Event"):
        github.parse("  ", "d", b"{}")
