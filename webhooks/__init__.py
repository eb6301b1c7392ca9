"""GitHub and GitLab: verify deliveries, parse them into one neutral `GitEvent`, report back.

- `webhooks.github` / `webhooks.gitlab`: `verify(...)`, `parse(...)` and a `WEBHOOK` receiver
  (entry point group `metalform.webhooks`) that the server mounts.
- `webhooks.events`: `GitEvent` and its closed vocabularies.
- `webhooks.forge`: clients that post the plan comment and the `metalform/plan` status (one
  module per forge, `forge_github` and `forge_gitlab`; what they share in `forge_base`).
- `webhooks.payload`: the body size limit (`MAX_BODY_BYTES`, `ensure_size`, `read_body`).
"""

from webhooks.errors import ForgeError, PayloadError, PayloadTooLarge, WebhookError
from webhooks.events import (
    Command,
    CommentAction,
    EventKind,
    Forge,
    GitEvent,
    PRAction,
    parse_command,
)
from webhooks.forge import (
    PLAN_MARKER,
    STATUS_CONTEXT,
    CommentRef,
    CommitState,
    ForgeClient,
    GitHubClient,
    GitLabClient,
    make_client,
)
from webhooks.payload import MAX_BODY_BYTES, ensure_size, read_body
from webhooks.receiver import ENTRY_POINT_GROUP, WebhookReceiver

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_BODY_BYTES",
    "PLAN_MARKER",
    "STATUS_CONTEXT",
    "Command",
    "CommentAction",
    "CommentRef",
    "CommitState",
    "EventKind",
    "Forge",
    "ForgeClient",
    "ForgeError",
    "GitEvent",
    "GitHubClient",
    "GitLabClient",
    "PRAction",
    "PayloadError",
    "PayloadTooLarge",
    "WebhookError",
    "WebhookReceiver",
    "ensure_size",
    "make_client",
    "parse_command",
    "read_body",
]
