"""GitLab webhooks: check `X-Gitlab-Token` and parse deliveries into a `GitEvent`.

Handled events (`X-Gitlab-Event`): `Push Hook`, `Merge Request Hook`, and `Note Hook` for
comments on merge requests; payload shapes follow GitLab's "Webhook events" documentation.
Everything else (tags, issues, pipelines, notes on commits...) parses to an `ignored` event.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from pydantic import ValidationError

from webhooks.errors import PayloadError
from webhooks.events import (
    CommentAction,
    EventKind,
    Forge,
    GitEvent,
    PRAction,
    branch_of,
    parse_command,
    sha_or_none,
    tag_of,
)
from webhooks.payload import (
    HeaderGetter,
    Wire,
    delivery_id_or_digest,
    describe_errors,
    load_object,
    validate,
)
from webhooks.receiver import WebhookReceiver

TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"
# `Idempotency-Key` (GitLab 17.4+) stays the same across retries of one delivery; older
# versions only send `X-Gitlab-Event-UUID`.
DELIVERY_HEADERS = ("Idempotency-Key", "X-Gitlab-Event-UUID")

PUSH_HOOK = "Push Hook"
MERGE_REQUEST_HOOK = "Merge Request Hook"
NOTE_HOOK = "Note Hook"


def verify(token: bytes | str, header: str | None) -> bool:
    """True when the `X-Gitlab-Token` header equals the configured `token`.

    Constant time, and length-blind: both sides are hashed first, because `compare_digest`
    on the raw values returns early when the lengths differ. An empty token fails closed.
    """
    if not token or header is None:
        return False
    expected = token.encode() if isinstance(token, str) else token
    given = header.encode("utf-8", errors="replace")
    return hmac.compare_digest(hashlib.sha256(expected).digest(), hashlib.sha256(given).digest())


# --- wire shapes: only the fields Metalform reads ------------------------------------------


class _Project(Wire):
    id: int
    path_with_namespace: str
    git_http_url: str | None = None
    http_url: str | None = None  # deprecated alias GitLab still sends

    @property
    def clone_url(self) -> str | None:
        return self.git_http_url or self.http_url


class _User(Wire):
    username: str


class _Push(Wire):
    object_kind: str
    ref: str
    before: str
    after: str
    user_username: str
    project: _Project


class _Commit(Wire):
    id: str


class _MergeRequestAttributes(Wire):
    iid: int
    action: str | None = None  # absent on some old versions and on system-triggered updates
    source_branch: str
    target_branch: str
    source_project_id: int | None = None
    target_project_id: int | None = None
    last_commit: _Commit
    oldrev: str | None = None  # only when new code was pushed


class _MergeRequestEvent(Wire):
    object_kind: str
    user: _User
    project: _Project
    object_attributes: _MergeRequestAttributes
    changes: dict[str, Any] = {}


class _NoteAttributes(Wire):
    id: int
    note: str
    noteable_type: str
    action: str | None = None  # GitLab 16.11+; earlier versions only sent new notes
    system: bool = False


class _NoteMergeRequest(Wire):
    iid: int
    source_branch: str
    target_branch: str
    source_project_id: int | None = None
    target_project_id: int | None = None
    last_commit: _Commit | None = None


class _NoteEvent(Wire):
    object_kind: str
    user: _User
    project: _Project
    object_attributes: _NoteAttributes
    merge_request: _NoteMergeRequest | None = None


_OBJECT_KINDS = {PUSH_HOOK: "push", MERGE_REQUEST_HOOK: "merge_request", NOTE_HOOK: "note"}
_MR_ACTIONS = {
    "open": PRAction.OPENED,
    "reopen": PRAction.REOPENED,
    "close": PRAction.CLOSED,
    "merge": PRAction.MERGED,
}
_NOTE_ACTIONS = {
    None: CommentAction.CREATED,
    "create": CommentAction.CREATED,
    "update": CommentAction.EDITED,
}


def parse(event_header: str, delivery_id: str | None, body: bytes) -> GitEvent:
    """Parse a verified delivery. Raises `PayloadError` for malformed JSON or missing fields.

    `delivery_id` is `Idempotency-Key` or `X-Gitlab-Event-UUID`; without one a digest of the
    body stands in.
    """
    event = (event_header or "").strip()
    if not event:
        raise PayloadError(f"missing {EVENT_HEADER} header")
    data = load_object(body, event)
    common: dict[str, Any] = {
        "forge": Forge.GITLAB,
        "delivery_id": delivery_id_or_digest(delivery_id, body),
        "event_name": event,
    }
    expected_kind = _OBJECT_KINDS.get(event)
    if expected_kind is None:
        return _ignored(data, common, f"event {event!r} is not handled")
    kind = data.get("object_kind")
    if kind != expected_kind:
        # The header is not signed and the body is; trust neither alone when they disagree.
        raise PayloadError(
            f"{event}: object_kind {str(kind)[:40]!r} does not match (expected {expected_kind!r})"
        )
    try:
        if event == PUSH_HOOK:
            return _push(validate(_Push, data, event), common)
        if event == MERGE_REQUEST_HOOK:
            return _merge_request(validate(_MergeRequestEvent, data, event), common)
        return _note(validate(_NoteEvent, data, event), data, common)
    except ValidationError as exc:  # a field has a shape GitEvent refuses (e.g. a bad sha)
        raise PayloadError(f"{event}: {describe_errors(exc)}") from None


def _project_fields(project: _Project) -> dict[str, Any]:
    return {
        "repository": project.path_with_namespace,
        "repository_id": project.id,
        "clone_url": project.clone_url,
    }


def _push(p: _Push, common: dict[str, Any]) -> GitEvent:
    head = sha_or_none(p.after)
    before = sha_or_none(p.before)
    return GitEvent(
        kind=EventKind.PUSH,
        **_project_fields(p.project),
        ref=p.ref,
        branch=branch_of(p.ref),
        tag=tag_of(p.ref),
        head_sha=head,
        before_sha=before,
        # GitLab has no created/deleted flags: the all-zero sha on one side says it.
        created=before is None and head is not None,
        deleted=head is None,
        sender=p.user_username,
        **common,
    )


def _mr_action(attrs: _MergeRequestAttributes, changes: dict[str, Any]) -> PRAction:
    if attrs.action in _MR_ACTIONS:
        return _MR_ACTIONS[attrs.action]
    if attrs.action != "update":
        return PRAction.OTHER  # approved, approval, unapproved, unapproval, or none
    if sha_or_none(attrs.oldrev) is not None:
        return PRAction.SYNCHRONIZE
    for key in ("draft", "work_in_progress"):  # `work_in_progress` before GitLab 14
        change = changes.get(key)
        if (
            isinstance(change, dict)
            and change.get("previous") is True
            and (change.get("current") is False)
        ):
            return PRAction.READY_FOR_REVIEW
    return PRAction.EDITED


def _from_fork(source: int | None, target: int | None) -> bool:
    return source is not None and target is not None and source != target


def _merge_request(p: _MergeRequestEvent, common: dict[str, Any]) -> GitEvent:
    attrs = p.object_attributes
    return GitEvent(
        kind=EventKind.PULL_REQUEST,
        **_project_fields(p.project),
        pr_number=attrs.iid,
        pr_action=_mr_action(attrs, p.changes),
        forge_action=attrs.action,
        head_sha=attrs.last_commit.id,
        before_sha=sha_or_none(attrs.oldrev),
        head_branch=attrs.source_branch,
        base_branch=attrs.target_branch,
        from_fork=_from_fork(attrs.source_project_id, attrs.target_project_id),
        sender=p.user.username,
        **common,
    )


def _note(p: _NoteEvent, data: dict[str, Any], common: dict[str, Any]) -> GitEvent:
    attrs = p.object_attributes
    if attrs.noteable_type != "MergeRequest":
        return _ignored(
            data, common, f"comment on a {attrs.noteable_type[:40]}, not a merge request"
        )
    if attrs.system:
        return _ignored(data, common, "system note (written by GitLab, not by a user)")
    action = _NOTE_ACTIONS.get(attrs.action)
    if action is None:
        return _ignored(data, common, f"note action {str(attrs.action)[:40]!r} is not handled")
    mr = p.merge_request
    if mr is None:
        raise PayloadError(f"{NOTE_HOOK}: merge_request: Field required")
    return GitEvent(
        kind=EventKind.COMMENT,
        **_project_fields(p.project),
        pr_number=mr.iid,
        forge_action=attrs.action,
        head_sha=mr.last_commit.id if mr.last_commit else None,
        head_branch=mr.source_branch,
        base_branch=mr.target_branch,
        from_fork=_from_fork(mr.source_project_id, mr.target_project_id),
        comment_id=attrs.id,
        comment_body=attrs.note,
        comment_author=p.user.username,
        comment_action=action,
        # Only a new note is a command (see the GitHub parser for why edits are not).
        command=parse_command(attrs.note) if action is CommentAction.CREATED else None,
        sender=p.user.username,
        **common,
    )


def _ignored(data: dict[str, Any], common: dict[str, Any], reason: str) -> GitEvent:
    """An event we do not act on; keep what identifies it in logs, validate nothing else."""
    project = data.get("project")
    user = data.get("user")
    name = project.get("path_with_namespace") if isinstance(project, dict) else None
    login = user.get("username") if isinstance(user, dict) else data.get("user_username")
    return GitEvent(
        kind=EventKind.IGNORED,
        ignored_reason=reason,
        repository=name if isinstance(name, str) and name.isprintable() else None,
        sender=login if isinstance(login, str) and login.isprintable() else None,
        **common,
    )


def _authenticate(secret: bytes, get_header: HeaderGetter, body: bytes) -> bool:
    return verify(secret, get_header(TOKEN_HEADER))


WEBHOOK = WebhookReceiver(
    forge=Forge.GITLAB,
    route="/webhooks/gitlab",
    summary="GitLab deliveries (X-Gitlab-Token)",
    event_header=EVENT_HEADER,
    delivery_headers=DELIVERY_HEADERS,
    authenticate_fn=_authenticate,
    parse_fn=parse,
)
"""The GitLab receiver (entry point `gitlab` in group `metalform.webhooks`)."""
