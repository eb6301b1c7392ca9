"""The GitLab client: merge request notes and commit statuses, REST API v4.

gitlab.com, or self-managed GitLab at `https://HOST/api/v4`.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from reconciler.secrets import Secret
from webhooks.errors import ForgeError
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

GITLAB_API_URL = "https://gitlab.com/api/v4"


class GitLabClient(HttpForge):
    """GitLab REST API v4: merge request notes and commit statuses."""

    forge = Forge.GITLAB
    comment_limit = 1_000_000  # GitLab's note length limit
    description_limit = 255
    _STATES: ClassVar[dict[CommitState, str]] = {
        CommitState.PENDING: "pending",
        CommitState.SUCCESS: "success",
        CommitState.FAILURE: "failed",
        CommitState.ERROR: "failed",
    }

    def __init__(
        self,
        token: str | Secret,
        api_url: str = GITLAB_API_URL,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        verify: bool | str = True,
    ) -> None:
        super().__init__(token, api_url, timeout=timeout, verify=verify)

    def _auth_headers(self, token: str) -> dict[str, str]:
        return {"PRIVATE-TOKEN": token}

    @staticmethod
    def _project(project: str | int) -> str:
        """`/projects/:id`: a numeric id, or the URL-encoded `group/project` path."""
        text = str(project)
        if not text or ".." in text.split("/"):
            raise ValueError(f"gitlab: not a project id or path: {short(text, 80)!r}")
        return "/projects/" + quote(text, safe="")

    def _notes(self, project: str | int, number: int) -> str:
        return f"{self._project(project)}/merge_requests/{int(number)}/notes"

    def find_comment(
        self, project: str | int, number: int, marker: str = PLAN_MARKER
    ) -> int | None:
        """The id of our newest note (body starting with `marker`) on a MR, if any."""
        params: dict[str, Any] = {"per_page": 100, "sort": "asc", "order_by": "created_at"}
        found = None
        for page in range(1, MAX_PAGES + 1):
            params["page"] = page
            response = self._request(
                "GET", self._notes(project, number), "list notes", params=params
            )
            for note in response.json():
                if not note.get("system") and str(note.get("body") or "").startswith(marker):
                    found = int(note["id"])
            if not response.headers.get("X-Next-Page"):
                break
        return found

    def _update_comment(self, repository: str | int, number: int, cid: int, text: str) -> None:
        notes = self._notes(repository, number)
        self._request("PUT", f"{notes}/{cid}", "update note", json={"body": text})

    def _create_comment(self, repository: str | int, number: int, text: str) -> int:
        notes = self._notes(repository, number)
        response = self._request("POST", notes, "create note", json={"body": text})
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
        """Post the commit status `context` (GitLab's `name`) on `sha`."""
        gitlab_state = self._STATES[CommitState(state)]
        payload: dict[str, Any] = {
            "state": gitlab_state,
            "name": context,
            "description": short(description, self.description_limit),
        }
        if target_url:
            payload["target_url"] = target_url
        try:
            self._request(
                "POST",
                f"{self._project(repository)}/statuses/{self._check_sha(sha)}",
                "set status",
                json=payload,
            )
        except ForgeError as exc:
            # GitLab refuses pending -> pending with 400 "Cannot transition status via :enqueue
            # from :pending": the status already says what we wanted, so that is success.
            if not (
                exc.status == 400 and gitlab_state == "pending" and "from :pending" in str(exc)
            ):
                raise

    def head_sha(self, repository: str | int, number: int) -> str:
        """The current head commit of a merge request."""
        response = self._request(
            "GET", f"{self._project(repository)}/merge_requests/{int(number)}", "get merge request"
        )
        return str(response.json()["sha"])
