"""GitHub webhooks: verify `X-Hub-Signature-256` and parse deliveries into a `GitEvent`.

Handled events: `ping`, `push`, `pull_request`, and `issue_comment` on pull requests (GitHub
reports PR conversation comments as comments on the PR's issue, with `issue.pull_request` set).
Everything else parses to an `ignored` event, so the server can answer 2xx and move on.
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

SIGNATURE_HEADER = "X-Hub-Signature-256"
EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"
_SCHEME = "sha256"


def sign(secret: bytes | str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`: `sha256=<hex>`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return f"{_SCHEME}=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: bytes | str, body: bytes, signature_header: str | None) -> bool:
    """True when `signature_header` is the HMAC-SHA256 of the raw `body` under `secret`.

    Fails closed: an empty secret, a missing or malformed header, or the legacy SHA-1
    `X-Hub-Signature` scheme all give False. The comparison is constant time.
    """
    if not secret or not signature_header:
        return False
    scheme, sep, given = signature_header.strip().partition("=")
    # compare_digest raises on non-ASCII str; such a header cannot be ours anyway.
    if scheme != _SCHEME or not sep or not given.isascii():
        return False
    expected = sign(secret, body).partition("=")[2]
    return hmac.compare_digest(expected, given.lower())


# --- wire shapes: only the fields Metalform reads ------------------------------------------


class _Account(Wire):
    login: str


class _Repository(Wire):
    id: int | None = None
    full_name: str
    clone_url: str


class _Ping(Wire):
    repository: _Repository | None = None
    sender: _Account | None = None


class _Push(Wire):
    ref: str
    before: str
    after: str
    created: bool = False
    deleted: bool = False
    repository: _Repository
    sender: _Account


class _RepoName(Wire):
    full_name: str


class _PullRequestRef(Wire):
    ref: str
    sha: str
    repo: _RepoName | None = None  # null when the fork was deleted


class _PullRequest(Wire):
    number: int
    head: _PullRequestRef
    base: _PullRequestRef
    merged: bool | None = None


class _PullRequestEvent(Wire):
    action: str
    number: int
    pull_request: _PullRequest
    repository: _Repository
    sender: _Account
    before: str | None = None  # only on `synchronize`


class _Issue(Wire):
    number: int
    pull_request: dict[str, Any] | None = None


class _Comment(Wire):
    id: int
    body: str | None = None
    user: _Account


class _IssueComment(Wire):
    action: str
    issue: _Issue
    comment: _Comment
    repository: _Repository
    sender: _Account


_PR_ACTIONS = {
    "opened": PRAction.OPENED,
    "synchronize": PRAction.SYNCHRONIZE,
    "reopened": PRAction.REOPENED,
    "ready_for_review": PRAction.READY_FOR_REVIEW,
    "edited": PRAction.EDITED,
}
_COMMENT_ACTIONS = {
    "created": CommentAction.CREATED,
    "edited": CommentAction.EDITED,
    "deleted": CommentAction.DELETED,
}


def parse(event_header: str, delivery_id: str | None, body: bytes) -> GitEvent:
    """Parse a verified delivery. Raises `PayloadError` for malformed JSON or missing fields.

    `delivery_id` is the `X-GitHub-Delivery` header; without one a digest of the body stands in.
    """
    event = (event_header or "").strip()
    if not event:
        raise PayloadError(f"missing {EVENT_HEADER} header")
    data = load_object(body, event)
    common: dict[str, Any] = {
        "forge": Forge.GITHUB,
        "delivery_id": delivery_id_or_digest(delivery_id, body),
        "event_name": event,
    }
    try:
        if event == "ping":
            return _ping(validate(_Ping, data, event), common)
        if event == "push":
            return _push(validate(_Push, data, event), common)
        if event == "pull_request":
            return _pull_request(validate(_PullRequestEvent, data, event), common)
        if event == "issue_comment":
            return _issue_comment(validate(_IssueComment, data, event), common)
        return _ignored(data, common, f"event {event!r} is not handled")
    except ValidationError as exc:  # a field has a shape GitEvent refuses (e.g. a bad sha)
        raise PayloadError(f"{event}: {describe_errors(exc)}") from None


def _ping(p: _Ping, common: dict[str, Any]) -> GitEvent:
    repo = p.repository
    return GitEvent(
        kind=EventKind.PING,
        repository=repo.full_name if repo else None,
        repository_id=repo.id if repo else None,
        clone_url=repo.clone_url if repo else None,
        sender=p.sender.login if p.sender else None,
        **common,
    )


def _push(p: _Push, common: dict[str, Any]) -> GitEvent:
    return GitEvent(
        kind=EventKind.PUSH,
        repository=p.repository.full_name,
        repository_id=p.repository.id,
        clone_url=p.repository.clone_url,
        ref=p.ref,
        branch=branch_of(p.ref),
        tag=tag_of(p.ref),
        head_sha=None if p.deleted else sha_or_none(p.after),
        before_sha=sha_or_none(p.before),
        created=p.created,
        deleted=p.deleted,
        sender=p.sender.login,
        **common,
    )


def _pull_request(p: _PullRequestEvent, common: dict[str, Any]) -> GitEvent:
    pr = p.pull_request
    if p.action == "closed":
        action = PRAction.MERGED if pr.merged else PRAction.CLOSED
    else:
        action = _PR_ACTIONS.get(p.action, PRAction.OTHER)
    head_repo = pr.head.repo.full_name if pr.head.repo else None
    return GitEvent(
        kind=EventKind.PULL_REQUEST,
        repository=p.repository.full_name,
        repository_id=p.repository.id,
        clone_url=p.repository.clone_url,
        pr_number=p.number,
        pr_action=action,
        forge_action=p.action,
        head_sha=pr.head.sha,
        head_branch=pr.head.ref,
        base_branch=pr.base.ref,
        before_sha=sha_or_none(p.before),
        # A deleted fork (head.repo null) is still someone else's code.
        from_fork=head_repo != p.repository.full_name,
        sender=p.sender.login,
        **common,
    )


def _issue_comment(p: _IssueComment, common: dict[str, Any]) -> GitEvent:
    if p.issue.pull_request is None:
        return _ignored(
            {"repository": p.repository.model_dump(), "sender": p.sender.model_dump()},
            common,
            f"comment on issue #{p.issue.number}, not on a pull request",
        )
    action = _COMMENT_ACTIONS.get(p.action)
    if action is None:  # an action GitHub may add later: not ours to act on
        return _ignored(
            {"repository": p.repository.model_dump(), "sender": p.sender.model_dump()},
            common,
            f"issue_comment action {p.action[:40]!r} is not handled",
        )
    return GitEvent(
        kind=EventKind.COMMENT,
        repository=p.repository.full_name,
        repository_id=p.repository.id,
        clone_url=p.repository.clone_url,
        pr_number=p.issue.number,
        forge_action=p.action,
        comment_id=p.comment.id,
        comment_body=p.comment.body or "",
        comment_author=p.comment.user.login,
        comment_action=action,
        # Only a new comment is a command: an edit is made by `sender` but the comment stays
        # authored by `comment.user`, so honouring edits would let one user act as another.
        command=parse_command(p.comment.body) if action is CommentAction.CREATED else None,
        sender=p.sender.login,
        **common,
    )


def _ignored(data: dict[str, Any], common: dict[str, Any], reason: str) -> GitEvent:
    """An event we do not act on; keep what identifies it in logs, validate nothing else."""
    repo = data.get("repository")
    sender = data.get("sender")
    full_name = repo.get("full_name") if isinstance(repo, dict) else None
    login = sender.get("login") if isinstance(sender, dict) else None
    return GitEvent(
        kind=EventKind.IGNORED,
        ignored_reason=reason,
        repository=full_name if isinstance(full_name, str) and full_name.isprintable() else None,
        sender=login if isinstance(login, str) and login.isprintable() else None,
        **common,
    )


def _authenticate(secret: bytes, get_header: HeaderGetter, body: bytes) -> bool:
    return verify(secret, body, get_header(SIGNATURE_HEADER))


WEBHOOK = WebhookReceiver(
    forge=Forge.GITHUB,
    route="/webhooks/github",
    summary="GitHub deliveries (X-Hub-Signature-256)",
    event_header=EVENT_HEADER,
    delivery_headers=(DELIVERY_HEADER,),
    authenticate_fn=_authenticate,
    parse_fn=parse,
)
"""The GitHub receiver (entry point `github` in group `metalform.webhooks`)."""
