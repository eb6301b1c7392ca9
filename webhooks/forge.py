"""Report back to the forge: one plan comment per pull request (updated in place) and a
`metalform/plan` commit status.

`GitHubClient` (github.com or GitHub Enterprise, `https://HOST/api/v3`, in
`webhooks.forge_github`) and `GitLabClient` (gitlab.com or self-managed, `https://HOST/api/v4`,
in `webhooks.forge_gitlab`) share one shape, `ForgeClient`, so the server does not care which
forge a pull request lives on; what they share in code (HTTP plumbing, token scrubbing, the
upsert of our one comment) is in `webhooks.forge_base`. The API base URL is configurable, which
is also how tests point them at a fake forge on loopback.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from reconciler.secrets import Secret
from webhooks.events import Forge
from webhooks.forge_base import (
    DEFAULT_TIMEOUT,
    PLAN_MARKER,
    STATUS_CONTEXT,
    CommentRef,
    CommitState,
)
from webhooks.forge_github import GITHUB_API_URL, GitHubClient
from webhooks.forge_gitlab import GITLAB_API_URL, GitLabClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "GITHUB_API_URL",
    "GITLAB_API_URL",
    "PLAN_MARKER",
    "STATUS_CONTEXT",
    "CommentRef",
    "CommitState",
    "ForgeClient",
    "GitHubClient",
    "GitLabClient",
    "make_client",
]


@runtime_checkable
class ForgeClient(Protocol):
    """What the server needs from a forge, whichever it is."""

    forge: Forge

    def upsert_comment(
        self,
        repository: str | int,
        number: int,
        body: str,
        *,
        comment_id: int | None = None,
        marker: str = PLAN_MARKER,
    ) -> CommentRef: ...

    def set_status(
        self,
        repository: str | int,
        sha: str,
        state: CommitState,
        description: str,
        *,
        target_url: str | None = None,
        context: str = STATUS_CONTEXT,
    ) -> None: ...

    def head_sha(self, repository: str | int, number: int) -> str: ...

    def close(self) -> None: ...


def make_client(
    forge: Forge | str,
    token: str | Secret,
    api_url: str | None = None,
    *,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    verify: bool | str = True,
) -> GitHubClient | GitLabClient:
    """The client for `forge`, on its public API unless `api_url` says otherwise."""
    forge = Forge(forge)
    if forge is Forge.GITHUB:
        return GitHubClient(token, api_url or GITHUB_API_URL, timeout=timeout, verify=verify)
    return GitLabClient(token, api_url or GITLAB_API_URL, timeout=timeout, verify=verify)
