"""The GitHub client: issue comments on pull requests and commit statuses, REST API v3.

github.com, or GitHub Enterprise at `https://HOST/api/v3`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from reconciler.secrets import Secret
from webhooks.events import Forge
from webhooks.forge_base import (
    DEFAULT_TIMEOUT,
    MAX_PAGES,
    PLAN_MARKER,
    STATUS_CONTEXT,
    CommitState,
    HttpForge,
    short,
)

GITHUB_API_URL = "https://api.github.com"

_GITHUB_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")  # fullmatch, not `$`


class GitHubClient(HttpForge):
    """GitHub REST API v3: issue comments on pull requests and commit statuses."""

    forge = Forge.GITHUB
    comment_limit = 65536  # GitHub refuses longer comment bodies with 422
    description_limit = 140

    def __init__(
        self,
        token: str | Secret,
        api_url: str = GITHUB_API_URL,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        verify: bool | str = True,
    ) -> None:
        super().__init__(token, api_url, timeout=timeout, verify=verify)

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }

    @staticmethod
    def _repo(repository: str | int) -> str:
        name = str(repository)
        if not _GITHUB_REPO.fullmatch(name) or ".." in name:
            raise ValueError(f"github: not an owner/repo name: {short(name, 80)!r}")
        return "/repos/" + "/".join(quote(part, safe="") for part in name.split("/"))

    def find_comment(
        self, repository: str | int, number: int, marker: str = PLAN_MARKER
    ) -> int | None:
        """The id of our newest comment (body starting with `marker`) on a PR, if any."""
        url: str | None = f"{self._repo(repository)}/issues/{int(number)}/comments"
        params: dict[str, Any] | None = {"per_page": 100}
        found = None
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self._request("GET", url, "list comments", params=params)
            for comment in response.json():
                if str(comment.get("body") or "").startswith(marker):
                    found = int(comment["id"])
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries the query
            # Only follow links to the same API: the session would send the token anywhere.
            if url is not None and not url.startswith(self.api_url + "/"):
                break
        return found

    def _update_comment(self, repository: str | int, number: int, cid: int, text: str) -> None:
        self._request(
            "PATCH",
            f"{self._repo(repository)}/issues/comments/{cid}",
            "update comment",
            json={"body": text},
        )

    def _create_comment(self, repository: str | int, number: int, text: str) -> int:
        response = self._request(
            "POST",
            f"{self._repo(repository)}/issues/{int(number)}/comments",
            "create comment",
            json={"body": text},
        )
        return int(response.json()["id"])

    def set_status(
        self,
        repository: str | int,
        sha: str,
        state: CommitState,
        description: str,
        *,
        target_url: str | None = None,
        context: str = STATUS_CONTEXT,
    ) -> None:
        """Post the commit status `context` (default `metalform/plan`) on `sha`."""
        payload: dict[str, Any] = {
            "state": CommitState(state).value,
            "context": context,
            "description": short(description, self.description_limit),
        }
        if target_url:
            payload["target_url"] = target_url
        self._request(
            "POST",
            f"{self._repo(repository)}/statuses/{self._check_sha(sha)}",
            "set status",
            json=payload,
            ok=(201,),
        )

    def head_sha(self, repository: str | int, number: int) -> str:
        """The current head commit of a pull request (to check a plan is still current)."""
        response = self._request("GET", f"{self._repo(repository)}/pulls/{int(number)}", "get pull")
        return str(response.json()["head"]["sha"])
