"""The neutral event: what a GitHub or GitLab delivery means to Metalform.

Both forges' payloads are parsed into one frozen `GitEvent`, so the server decides what to do
(plan, apply, ignore) without knowing which forge sent it. Absent values are `None`: a push that
creates a branch has no `before_sha`, one that deletes it has no `head_sha` (never the forge's
all-zero placeholder).
"""

from __future__ import annotations

import enum
import re

from pydantic import BaseModel, ConfigDict, computed_field, field_validator, model_validator

ZERO_SHA = "0" * 40
"""What both forges send as `before` of a created ref and `after` of a deleted one."""

_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1 or SHA-256 names, fullmatch
# Refs and branch names reach git command lines; git itself forbids these, so refusing them
# rejects no real payload and keeps option-like or control-character names out.
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|^-|\.\.|@\{")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Forge(enum.StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"


class EventKind(enum.StrEnum):
    PUSH = "push"
    PULL_REQUEST = "pull_request"
    COMMENT = "comment"
    PING = "ping"
    IGNORED = "ignored"


class PRAction(enum.StrEnum):
    """What happened to a pull (merge) request, in one vocabulary for both forges."""

    OPENED = "opened"
    SYNCHRONIZE = "synchronize"  # new commits on the head branch
    REOPENED = "reopened"
    READY_FOR_REVIEW = "ready_for_review"  # left draft state
    EDITED = "edited"  # title, description, labels...: not the code
    CLOSED = "closed"  # closed without merging
    MERGED = "merged"
    OTHER = "other"  # assigned, labeled, approved, ...: see `forge_action`


class CommentAction(enum.StrEnum):
    CREATED = "created"
    EDITED = "edited"
    DELETED = "deleted"


class Command(enum.StrEnum):
    """A `/metalform <verb>` command given in a pull request comment."""

    APPLY = "apply"
    PLAN = "plan"


COMMAND_PREFIX = "/metalform"
_COMMANDS = {f"{COMMAND_PREFIX} {c.value}": c for c in Command}

PLAN_TRIGGERS = frozenset({PRAction.OPENED, PRAction.SYNCHRONIZE, PRAction.REOPENED})
"""PR actions after which the head must be planned again (the code under review changed)."""


def parse_command(body: str | None) -> Command | None:
    """The command in a comment: its first line, trimmed, is exactly `/metalform apply|plan`.

    Leading blank lines are skipped (the comment is trimmed first); the rest of the comment
    after the first line is free text, e.g. a reason for the apply.

    Matching is exact and case-sensitive: a command that triggers an apply must not be found
    inside prose, quoted replies or code blocks, and `/metalform apply now` is not a command.
    """
    text = (body or "").strip()
    if not text:
        return None
    return _COMMANDS.get(text.splitlines()[0].strip())


def branch_of(ref: str | None) -> str | None:
    """`refs/heads/main` -> `main`; None for tags and other refs."""
    if ref and ref.startswith("refs/heads/"):
        return ref.removeprefix("refs/heads/") or None
    return None


def tag_of(ref: str | None) -> str | None:
    """`refs/tags/v1` -> `v1`; None for branches and other refs."""
    if ref and ref.startswith("refs/tags/"):
        return ref.removeprefix("refs/tags/") or None
    return None


def sha_or_none(value: str | None) -> str | None:
    """A commit sha, or None for the forge's all-zero "no commit" placeholder or an empty value."""
    if not value or value.strip("0") == "":
        return None
    return value


class GitEvent(BaseModel):
    """One forge delivery, verified and parsed. Which fields are set depends on `kind`.

    - push: repository, clone_url, ref, branch or tag, head_sha (None when deleted),
      before_sha (None when created), created, deleted, sender.
    - pull_request: pr_number, pr_action (+ raw forge_action), head_sha, head_branch,
      base_branch, before_sha (when the forge sends it), from_fork, sender.
    - comment: pr_number, comment_id, comment_body, comment_author, comment_action, command
      (only for a newly created comment), head_sha/branches when the forge sends them (GitLab).
    - ping: repository when the hook belongs to one.
    - ignored: ignored_reason, plus whatever identifies the delivery in logs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    forge: Forge
    delivery_id: str
    event_name: str
    """The forge's own event name (`X-GitHub-Event` / `X-Gitlab-Event`), for logs."""

    repository: str | None = None
    """Full name: `owner/repo` (GitHub) or `group/subgroup/project` (GitLab)."""
    repository_id: int | None = None
    """The forge's numeric id; GitLab API calls address the project by it."""
    clone_url: str | None = None

    ref: str | None = None
    branch: str | None = None
    tag: str | None = None
    head_sha: str | None = None
    before_sha: str | None = None
    created: bool = False
    deleted: bool = False

    pr_number: int | None = None
    pr_action: PRAction | None = None
    forge_action: str | None = None
    """The forge's raw action (`synchronize`, `update`, `labeled`, `create`...)."""
    base_branch: str | None = None
    head_branch: str | None = None
    from_fork: bool = False

    sender: str | None = None
    """Login of whoever caused the delivery (pusher, PR actor, commenter)."""

    comment_id: int | None = None
    comment_body: str | None = None
    comment_author: str | None = None
    comment_action: CommentAction | None = None
    command: Command | None = None

    ignored_reason: str | None = None

    @field_validator("head_sha", "before_sha")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not _SHA.fullmatch(value):
            raise ValueError("not a commit sha (40 or 64 lowercase hex digits)")
        return value

    @field_validator("ref", "branch", "tag", "base_branch", "head_branch")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is not None and (not value or _BAD_REF.search(value)):
            raise ValueError("not a valid git ref name")
        return value

    @field_validator("repository", "delivery_id", "event_name", "sender", "comment_author")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        # These end up in logs and PR comments; a control character there is never legitimate.
        if value is not None and _CONTROL.search(value):
            raise ValueError("contains control characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GitEvent:
        if self.command is not None and self.kind is not EventKind.COMMENT:
            raise ValueError("only a comment carries a command")
        if self.kind in (EventKind.PULL_REQUEST, EventKind.COMMENT) and self.pr_number is None:
            raise ValueError(f"a {self.kind.value} event needs a pull request number")
        if self.kind is EventKind.IGNORED and not self.ignored_reason:
            raise ValueError("an ignored event says why")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_apply_command(self) -> bool:
        """A new PR comment whose first line is `/metalform apply`."""
        return self.command is Command.APPLY

    @computed_field  # type: ignore[prop-decorator]
    @property
    def is_plan_command(self) -> bool:
        """A new PR comment whose first line is `/metalform plan` (re-plan the head)."""
        return self.command is Command.PLAN

    @property
    def wants_pr_plan(self) -> bool:
        """A pull request whose code changed (opened, new commits, reopened)."""
        return self.kind is EventKind.PULL_REQUEST and self.pr_action in PLAN_TRIGGERS
