"""Report back to the forge: one plan comment per pull request (updated in place) and a
`metalform/plan` commit status.

`GitHubClient` (github.com or GitHub Enterprise, `https://HOST/api/v3`) and `GitLabClient`
(gitlab.com or self-managed, `https://HOST/api/v4`) share one shape, `ForgeClient`, so the server
does not care which forge a pull request lives on. The API base URL is configurable, which is
also how tests point them at a fake forge on loopback.

Tokens are sent in headers only, registered with the process-wide redactor, and scrubbed from
every message this module produces.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import quote

import requests

from reconciler import __version__
from reconciler.secrets import REDACTOR, SENSITIVE, Secret
from webhooks.errors import ForgeError
from webhooks.events import Forge

log = logging.getLogger(__name__)

PLAN_MARKER = "<!-- metalform:plan -->"
"""First line of the plan comment: how we find our own comment again (invisible when rendered)."""
STATUS_CONTEXT = "metalform/plan"
GITHUB_API_URL = "https://api.github.com"
GITLAB_API_URL = "https://gitlab.com/api/v4"
DEFAULT_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds: a forge that hangs must not hold a server thread for long."""
MAX_PAGES = 50
"""Pages of comments searched for our marker (100 per page): bounds a pathological thread."""
TRUNCATED = "\n\n_(truncated: the full plan is in Metalform)_"

_GITHUB_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")  # fullmatch, not `$`
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # fullmatch: `$` accepts a final newline


class CommitState(enum.StrEnum):
    """Commit status states in GitHub's vocabulary; GitLab's client maps them."""

    PENDING = "pending"
    SUCCESS = "success"
    FAILURE = "failure"  # the plan ran and found a problem (invalid input, refused by policy)
    ERROR = "error"  # the plan could not run (a system was unreachable, a bug)


@dataclass(frozen=True)
class CommentRef:
    """Our comment on a pull request: its id (store it for next time) and whether it is new."""

    id: int
    created: bool


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


def with_marker(body: str, marker: str) -> str:
    """The comment body, starting with `marker` on its own line."""
    return body if body.startswith(marker) else f"{marker}\n{body}"


def fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _HttpForge:
    """HTTP plumbing shared by both clients: session, timeouts, errors, scrubbing."""

    forge: ClassVar[Forge]
    comment_limit: ClassVar[int]

    def __init__(
        self,
        token: str | Secret,
        api_url: str,
        *,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        verify: bool | str = True,
    ) -> None:
        value = token.reveal() if isinstance(token, Secret) else token
        if not value:
            raise ValueError(f"{self.forge.value}: empty API token")
        self._token = value
        # Anything else that prints it (a log line, an exception from a library) is scrubbed too.
        REDACTOR.add(value)
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.verify = verify
        self._session.headers.update(self._auth_headers(value))
        self._session.headers["User-Agent"] = f"metalform/{__version__}"

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r}, token={SENSITIVE})"

    def __enter__(self) -> _HttpForge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()

    def _scrub(self, text: str) -> str:
        return REDACTOR(text.replace(self._token, SENSITIVE))

    def _request(
        self,
        method: str,
        path_or_url: str,
        call: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> requests.Response:
        """One API call; a non-`ok` answer or no answer raises `ForgeError` naming the call."""
        url = (
            path_or_url
            if path_or_url.startswith(self.api_url + "/")
            else self.api_url + path_or_url
        )
        try:
            response = self._session.request(
                method, url, json=json, params=params, timeout=self.timeout, allow_redirects=False
            )
        except requests.RequestException as exc:
            raise ForgeError(
                forge=self.forge.value,
                call=call,
                status=None,
                detail=self._scrub(f"{type(exc).__name__}: {_short(str(exc), 300)}"),
                temporary=True,
                retry_after=1.0,
            ) from None
        log.debug("%s %s %s -> %s", self.forge.value, method, call, response.status_code)
        if response.status_code not in ok:
            raise self._error(call, response)
        return response

    def _error(self, call: str, response: requests.Response) -> ForgeError:
        status = response.status_code
        retry_after = _retry_after(response)
        rate_limited = status == 429 or (
            status == 403
            and (retry_after is not None or response.headers.get("X-RateLimit-Remaining") == "0")
        )
        temporary = status >= 500 or rate_limited
        return ForgeError(
            forge=self.forge.value,
            call=call,
            status=status,
            detail=self._scrub(_message_of(response)),
            temporary=temporary,
            retry_after=retry_after if retry_after is not None else (60.0 if rate_limited else 1.0),
        )

    @staticmethod
    def _upsert(
        find: Callable[[], int | None],
        update: Callable[[int], None],
        create: Callable[[], int],
        comment_id: int | None,
    ) -> CommentRef:
        """Update the known (or found) comment in place; create one only when there is none."""
        if comment_id is None:
            comment_id = find()
        if comment_id is not None:
            try:
                update(int(comment_id))
                return CommentRef(id=int(comment_id), created=False)
            except ForgeError as exc:
                if exc.status != 404:
                    raise
                # Someone deleted it: another of ours may remain; else post a new one.
                other = find()
                if other is not None and other != comment_id:
                    update(other)
                    return CommentRef(id=other, created=False)
        return CommentRef(id=create(), created=True)

    def _check_sha(self, sha: str) -> str:
        if not _SHA.fullmatch(sha):
            raise ValueError(f"{self.forge.value}: not a commit sha: {_short(sha, 80)!r}")
        return sha


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _message_of(response: requests.Response) -> str:
    """The forge's own error message (both use `message`), short, for the exception text."""
    if response.is_redirect:
        # Redirects are not followed: requests would carry GitLab's PRIVATE-TOKEN header to
        # wherever Location points. GitHub answers a renamed repository this way.
        return f"redirected to {_short(response.headers.get('Location', '?'), 200)} (not followed)"
    try:
        data = response.json()
    except ValueError:
        return _short(response.reason or "", 200)
    if isinstance(data, dict):
        message = data.get("message") or data.get("error") or ""
        return _short(str(message), 200)
    return ""


class GitHubClient(_HttpForge):
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
            raise ValueError(f"github: not an owner/repo name: {_short(name, 80)!r}")
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

    def upsert_comment(
        self,
        repository: str | int,
        number: int,
        body: str,
        *,
        comment_id: int | None = None,
        marker: str = PLAN_MARKER,
    ) -> CommentRef:
        """Update our comment in place (by `comment_id`, else found by `marker`), or create it."""
        repo = self._repo(repository)
        text = fit(with_marker(body, marker), self.comment_limit)

        def update(cid: int) -> None:
            self._request(
                "PATCH", f"{repo}/issues/comments/{cid}", "update comment", json={"body": text}
            )

        def create() -> int:
            response = self._request(
                "POST",
                f"{repo}/issues/{int(number)}/comments",
                "create comment",
                json={"body": text},
            )
            return int(response.json()["id"])

        return self._upsert(
            lambda: self.find_comment(repository, number, marker), update, create, comment_id
        )

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
            "description": _short(description, self.description_limit),
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


class GitLabClient(_HttpForge):
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
            raise ValueError(f"gitlab: not a project id or path: {_short(text, 80)!r}")
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

    def upsert_comment(
        self,
        repository: str | int,
        number: int,
        body: str,
        *,
        comment_id: int | None = None,
        marker: str = PLAN_MARKER,
    ) -> CommentRef:
        """Update our note in place (by `comment_id`, else found by `marker`), or create it."""
        notes = self._notes(repository, number)
        text = fit(with_marker(body, marker), self.comment_limit)

        def update(cid: int) -> None:
            self._request("PUT", f"{notes}/{cid}", "update note", json={"body": text})

        def create() -> int:
            response = self._request("POST", notes, "create note", json={"body": text})
            return int(response.json()["id"])

        return self._upsert(
            lambda: self.find_comment(repository, number, marker), update, create, comment_id
        )

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
            "description": _short(description, self.description_limit),
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
