"""GitLab: token check and parsing of payloads in the shapes GitLab documents (data/gitlab/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from webhooks import gitlab
from webhooks.errors import PayloadError
from webhooks.events import ZERO_SHA, Command, CommentAction, EventKind, Forge, PRAction

DATA = Path(__file__).parent / "data" / "gitlab"
TOKEN = b"gl-webhook-token-3f9a"


def load(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def wire(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def getter(values: dict[str, str]):
    lowered = {k.lower(): v for k, v in values.items()}
    return lambda name: lowered.get(name.lower())


# --- verify --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (TOKEN.decode(), True),
        (None, False),
        ("", False),
        ("gl-webhook-token-3f9b", False),
        ("gl-webhook-token-3f9a ", False),
        (TOKEN.decode()[:-1], False),
        (TOKEN.decode() + "x", False),
        ("gl-webhook-token-3f9é", False),
    ],
)
def test_verify_token(header: str | None, ok: bool) -> None:
    assert gitlab.verify(TOKEN, header) is ok
    assert gitlab.verify(TOKEN.decode(), header) is ok


def test_empty_configured_token_fails_closed() -> None:
    assert not gitlab.verify(b"", "")
    assert not gitlab.verify("", "anything")


def test_receiver_authenticates_from_headers() -> None:
    body = wire(load("push"))
    assert gitlab.WEBHOOK.authenticate(TOKEN, getter({"X-Gitlab-Token": TOKEN.decode()}), body)
    assert not gitlab.WEBHOOK.authenticate(TOKEN, getter({"X-Gitlab-Token": "nope"}), body)
    assert not gitlab.WEBHOOK.authenticate(TOKEN, getter({}), body)


# --- push ----------------------------------------------------------------------------------


def test_push() -> None:
    payload = load("push")
    event = gitlab.WEBHOOK.parse(
        getter({"X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "uuid-1"}), wire(payload)
    )
    assert event.model_dump(exclude_defaults=True) == {
        "kind": EventKind.PUSH,
        "forge": Forge.GITLAB,
        "delivery_id": "uuid-1",
        "event_name": "Push Hook",
        "repository": "infra/metal-desired",
        "repository_id": 42,
        "clone_url": "https://gitlab.example/infra/metal-desired.git",
        "ref": "refs/heads/main",
        "branch": "main",
        "head_sha": payload["after"],
        "before_sha": payload["before"],
        "sender": "alice",
        "is_apply_command": False,
        "is_plan_command": False,
    }


def test_push_creating_and_deleting_a_branch() -> None:
    created = load("push")
    created["before"] = ZERO_SHA
    created["ref"] = "refs/heads/gpu-r12"
    event = gitlab.parse("Push Hook", "u", wire(created))
    assert (event.created, event.deleted, event.before_sha) == (True, False, None)
    assert event.branch == "gpu-r12"

    deleted = load("push")
    deleted["after"] = ZERO_SHA
    deleted["checkout_sha"] = None
    deleted["commits"] = []
    event = gitlab.parse("Push Hook", "u", wire(deleted))
    assert (event.created, event.deleted, event.head_sha) == (False, True, None)


def test_idempotency_key_is_preferred_for_the_delivery_id() -> None:
    headers = {
        "X-Gitlab-Event": "Push Hook",
        "X-Gitlab-Event-UUID": "event-uuid",
        "Idempotency-Key": "retry-stable-key",
    }
    assert gitlab.WEBHOOK.parse(getter(headers), wire(load("push"))).delivery_id == (
        "retry-stable-key"
    )
    body = wire(load("push"))
    no_id = gitlab.WEBHOOK.parse(getter({"X-Gitlab-Event": "Push Hook"}), body)
    assert no_id.delivery_id.startswith("sha256:")


# --- merge requests ------------------------------------------------------------------------


def test_merge_request_opened() -> None:
    payload = load("merge_request")
    event = gitlab.parse("Merge Request Hook", "u", wire(payload))
    attrs = payload["object_attributes"]
    assert event.kind is EventKind.PULL_REQUEST
    assert event.pr_number == attrs["iid"] == 17
    assert event.pr_action is PRAction.OPENED
    assert event.forge_action == "open"
    assert event.head_sha == attrs["last_commit"]["id"]
    assert event.head_branch == "gpu-aggregate-r12"
    assert event.base_branch == "main"
    assert event.before_sha is None
    assert event.repository == "infra/metal-desired"
    assert event.repository_id == 42
    assert event.sender == "bob"
    assert event.from_fork is False
    assert event.wants_pr_plan


def _mr(action: str | None, **attrs: Any) -> dict[str, Any]:
    payload = load("merge_request")
    if action is None:
        del payload["object_attributes"]["action"]
    else:
        payload["object_attributes"]["action"] = action
    payload["object_attributes"].update(attrs)
    return payload


OLDREV = "1f3e5d7c9b0a2f4e6d8c0b2a4f6e8d0c2b4a6f8e"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (_mr("open"), PRAction.OPENED),
        (_mr("reopen"), PRAction.REOPENED),
        (_mr("update", oldrev=OLDREV), PRAction.SYNCHRONIZE),
        (_mr("update"), PRAction.EDITED),
        (_mr("close", state="closed"), PRAction.CLOSED),
        (_mr("merge", state="merged"), PRAction.MERGED),
        (_mr("approved"), PRAction.OTHER),
        (_mr("unapproval"), PRAction.OTHER),
        (_mr(None), PRAction.OTHER),
    ],
)
def test_merge_request_actions(payload: dict[str, Any], expected: PRAction) -> None:
    event = gitlab.parse("Merge Request Hook", "u", wire(payload))
    assert event.pr_action is expected
    if expected is PRAction.SYNCHRONIZE:
        assert event.before_sha == OLDREV


def test_merge_request_marked_ready() -> None:
    payload = _mr("update")
    payload["changes"] = {"draft": {"previous": True, "current": False}}
    assert gitlab.parse("Merge Request Hook", "u", wire(payload)).pr_action is (
        PRAction.READY_FOR_REVIEW
    )


def test_merge_request_from_a_fork() -> None:
    payload = _mr("open", source_project_id=77)
    assert gitlab.parse("Merge Request Hook", "u", wire(payload)).from_fork is True


# --- notes ---------------------------------------------------------------------------------


def test_note_on_merge_request_with_apply_command() -> None:
    payload = load("note_merge_request")
    event = gitlab.parse("Note Hook", "u", wire(payload))
    assert event.kind is EventKind.COMMENT
    assert event.pr_number == 17
    assert event.comment_id == 88231
    assert event.comment_body == payload["object_attributes"]["note"]
    assert event.comment_author == "alice"
    assert event.comment_action is CommentAction.CREATED
    assert event.command is Command.APPLY
    assert event.is_apply_command
    assert event.head_sha == payload["merge_request"]["last_commit"]["id"]
    assert event.head_branch == "gpu-aggregate-r12"
    assert event.base_branch == "main"


@pytest.mark.parametrize(
    ("note", "action", "command"),
    [
        ("/metalform plan", "create", Command.PLAN),
        ("/metalform apply", None, Command.APPLY),  # before 16.11: only new notes were sent
        ("/metalform apply", "update", None),  # an edit is not a command
        ("Looks good", "create", None),
        ("/metalform apply please", "create", None),
    ],
)
def test_note_commands(note: str, action: str | None, command: Command | None) -> None:
    payload = load("note_merge_request")
    payload["object_attributes"]["note"] = note
    if action is None:
        del payload["object_attributes"]["action"]
    else:
        payload["object_attributes"]["action"] = action
    event = gitlab.parse("Note Hook", "u", wire(payload))
    assert event.kind is EventKind.COMMENT
    assert event.command is command


@pytest.mark.parametrize(
    ("name", "reason"),
    [("note_issue", "Issue"), ("note_commit", "Commit")],
)
def test_notes_elsewhere_are_ignored(name: str, reason: str) -> None:
    event = gitlab.parse("Note Hook", "u", wire(load(name)))
    assert event.kind is EventKind.IGNORED
    assert reason in (event.ignored_reason or "")
    assert event.command is None
    assert event.repository == "infra/metal-desired"


def test_system_note_is_ignored() -> None:
    payload = load("note_merge_request")
    payload["object_attributes"]["system"] = True
    payload["object_attributes"]["note"] = "/metalform apply"
    event = gitlab.parse("Note Hook", "u", wire(payload))
    assert event.kind is EventKind.IGNORED


# --- other events and malformed deliveries -------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("Tag Push Hook", "tag_push"),
        ("Pipeline Hook", "pipeline"),
        ("Issue Hook", "note_issue"),
        ("System Hook", "push"),
    ],
)
def test_unhandled_events_are_ignored(header: str, name: str) -> None:
    event = gitlab.parse(header, "u", wire(load(name)))
    assert event.kind is EventKind.IGNORED
    assert header in (event.ignored_reason or "")


def test_header_and_object_kind_must_agree() -> None:
    with pytest.raises(PayloadError, match="object_kind"):
        gitlab.parse("Merge Request Hook", "u", wire(load("push")))
    with pytest.raises(PayloadError, match="object_kind"):
        gitlab.parse("Push Hook", "u", b"{}")


@pytest.mark.parametrize(
    ("header", "name", "path"),
    [
        ("Push Hook", "push", "after"),
        ("Push Hook", "push", "project.path_with_namespace"),
        ("Push Hook", "push", "user_username"),
        ("Merge Request Hook", "merge_request", "object_attributes.iid"),
        ("Merge Request Hook", "merge_request", "object_attributes.last_commit"),
        ("Merge Request Hook", "merge_request", "user"),
        ("Note Hook", "note_merge_request", "object_attributes.note"),
        ("Note Hook", "note_merge_request", "merge_request"),
    ],
)
def test_missing_required_field_is_a_payload_error(header: str, name: str, path: str) -> None:
    payload = copy.deepcopy(load(name))
    *parents, leaf = path.split(".")
    node = payload
    for key in parents:
        node = node[key]
    del node[leaf]
    with pytest.raises(PayloadError) as info:
        gitlab.parse(header, "u", wire(payload))
    assert path in str(info.value)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"push"', b"\xc3\x28"])
def test_malformed_json_is_a_payload_error(body: bytes) -> None:
    with pytest.raises(PayloadError):
        gitlab.parse("Push Hook", "u", body)


def test_bad_sha_is_refused() -> None:
    payload = load("merge_request")
    payload["object_attributes"]["last_commit"]["id"] = "$(reboot)"
    with pytest.raises(PayloadError) as info:
        gitlab.parse("Merge Request Hook", "u", wire(payload))
    assert "$(reboot)" not in str(info.value)


def test_missing_event_header() -> None:
    with pytest.raises(PayloadError, match="X-Gitlab-Event"):
        gitlab.WEBHOOK.parse(getter({}), wire(load("push")))
