"""The neutral event model and `/metalform` command parsing."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from webhooks.events import (
    ZERO_SHA,
    Command,
    EventKind,
    Forge,
    GitEvent,
    PRAction,
    branch_of,
    parse_command,
    sha_or_none,
    tag_of,
)

SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/metalform apply", Command.APPLY),
        ("/metalform plan", Command.PLAN),
        ("  /metalform apply  ", Command.APPLY),
        ("/metalform apply\nReviewed with the on-call.", Command.APPLY),
        ("/metalform apply\r\nCRLF from a browser", Command.APPLY),
        ("\n\n/metalform plan\n", Command.PLAN),
        ("\t/metalform plan", Command.PLAN),
        # Not exact: none of these may trigger anything.
        ("/metalform  apply", None),
        ("/Metalform apply", None),
        ("/METALFORM APPLY", None),
        ("/metalform apply now", None),
        ("/metalform apply-all", None),
        ("/metalform", None),
        ("/metalform destroy", None),
        ("please /metalform apply", None),
        ("> /metalform apply", None),
        ("LGTM\n/metalform apply", None),
        ("```\n/metalform apply\n```", None),
        ("`/metalform apply`", None),
        ("", None),
        ("   \n  ", None),
        (None, None),
    ],
)
def test_parse_command(body: str | None, expected: Command | None) -> None:
    assert parse_command(body) is expected


def test_ref_helpers() -> None:
    assert branch_of("refs/heads/main") == "main"
    assert branch_of("refs/heads/feature/gpu-r12") == "feature/gpu-r12"
    assert branch_of("refs/tags/v1") is None
    assert branch_of(None) is None
    assert tag_of("refs/tags/v1") == "v1"
    assert tag_of("refs/heads/main") is None
    assert sha_or_none(ZERO_SHA) is None
    assert sha_or_none("") is None
    assert sha_or_none(SHA) == SHA


def _comment(**overrides: object) -> GitEvent:
    fields: dict[str, object] = {
        "kind": EventKind.COMMENT,
        "forge": Forge.GITHUB,
        "delivery_id": "d-1",
        "event_name": "issue_comment",
        "pr_number": 3,
        "comment_body": "/metalform apply",
        "command": Command.APPLY,
    }
    fields.update(overrides)
    return GitEvent.model_validate(fields)


def test_event_is_frozen_and_dumps_its_command_flags() -> None:
    event = _comment()
    assert event.is_apply_command and not event.is_plan_command
    dumped = event.model_dump(mode="json")
    assert dumped["is_apply_command"] is True
    assert dumped["is_plan_command"] is False
    assert dumped["kind"] == "comment"
    with pytest.raises(ValidationError):
        event.kind = EventKind.PUSH  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"head_sha": "not-a-sha"}, "head_sha"),
        ({"head_sha": SHA.upper()}, "head_sha"),
        ({"before_sha": SHA[:-1]}, "before_sha"),
        ({"head_branch": "--upload-pack=touch /tmp/x"}, "head_branch"),
        ({"base_branch": "main..evil"}, "base_branch"),
        ({"head_branch": "has space"}, "head_branch"),
        ({"head_branch": "new\nline"}, "head_branch"),
        ({"head_branch": ""}, "head_branch"),
        ({"comment_author": "mallory\x1b[31m"}, "comment_author"),
        ({"kind": EventKind.PUSH}, "command"),
        ({"pr_number": None}, "pull request number"),
        ({"extra_field": 1}, "extra_field"),
    ],
)
def test_event_refuses_inconsistent_or_dangerous_values(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        _comment(**overrides)
    assert field in str(info.value)


def test_sha256_object_names_are_accepted() -> None:
    sha256 = "a" * 64
    assert _comment(head_sha=sha256).head_sha == sha256


def test_wants_pr_plan_only_when_the_code_changed() -> None:
    base = {
        "kind": EventKind.PULL_REQUEST,
        "forge": Forge.GITLAB,
        "delivery_id": "d",
        "event_name": "Merge Request Hook",
        "pr_number": 1,
    }
    wants = {a for a in PRAction if GitEvent.model_validate(base | {"pr_action": a}).wants_pr_plan}
    assert wants == {PRAction.OPENED, PRAction.SYNCHRONIZE, PRAction.REOPENED}


def test_ignored_event_says_why() -> None:
    with pytest.raises(ValidationError):
        GitEvent(kind=EventKind.IGNORED, forge=Forge.GITHUB, delivery_id="d", event_name="star")
