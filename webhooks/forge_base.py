"""What the GitHub and GitLab clients share: the vocabulary of reporting back (commit states,
the plan comment's marker), the HTTP plumbing (session, timeouts, errors, token scrubbing) and
the upsert of our one comment per pull request.

Tokens are sent in headers only, registered with the process-wide redactor, and scrubbed from
every message this module produces.
"""

from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from reconciler import __version__
from reconciler.secrets import REDACTOR, SENSITIVE, Secret
from webhooks.errors import ForgeError
from webhooks.events import Forge

# One logger for both clients, under the name the public module has always had.
log = logging.getLogger("webhooks.forge")

PLAN_MARKER = "<!-- metalform:plan -->"
"""First line of the plan comment: how we find our own comment again (invisible when rendered)."""
STATUS_CONTEXT = "metalform/plan"
DEFAULT_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds: a forge that hangs must not hold a server thread for long."""
MAX_PAGES = 50
"""Pages of comments searched for our marker (100 per page): bounds a pathological thread."""
TRUNCATED = "\n\n_(truncated: the full plan is in Metalform)_"

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


def with_marker(body: str, marker: str) -> str:
    """The comment body, starting with `marker` on its own line."""
    return body if body.startswith(marker) else f"{marker}\n{body}"


def fit(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, saying so when it was cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def short(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, with an ellipsis when it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HttpForge:
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(api_url={self.api_url!r}, token={SENSITIVE})"

    def __enter__(self) -> HttpForge:
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
                detail=self._scrub(f"{type(exc).__name__}: {short(str(exc), 300)}"),
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

    def upsert_comment(
        self,
        repository: str | int,
        number: int,
        body: str,
        *,
        comment_id: int | None = None,
        marker: str = PLAN_MARKER,
    ) -> CommentRef:
        """Update our comment in place (by `comment_id`, else found by `marker`), or create it.

        Only one comment is created per pull request: when the known one was deleted, another
        of ours is updated if one remains.
        """
        text = fit(with_marker(body, marker), self.comment_limit)

        def find() -> int | None:
            return self.find_comment(repository, number, marker)

        def update(cid: int) -> None:
            self._update_comment(repository, number, cid, text)

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
        return CommentRef(id=self._create_comment(repository, number, text), created=True)

    # -- what each forge says --------------------------------------------------------------------

    def _auth_headers(self, token: str) -> dict[str, str]:
        raise NotImplementedError

    def find_comment(
        self, repository: str | int, number: int, marker: str = PLAN_MARKER
    ) -> int | None:
        """The id of our newest comment (body starting with `marker`) on a PR, if any."""
        raise NotImplementedError

    def _update_comment(self, repository: str | int, number: int, cid: int, text: str) -> None:
        raise NotImplementedError

    def _create_comment(self, repository: str | int, number: int, text: str) -> int:
        """Post a new comment; its id."""
        raise NotImplementedError

    def _check_sha(self, sha: str) -> str:
        if not _SHA.fullmatch(sha):
            raise ValueError(f"{self.forge.value}: not a commit sha: {short(sha, 80)!r}")
        return sha


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


def _message_of(response: requests.Response) -> str:
    """The forge's own error message (both use `message`), short, for the exception text."""
    if response.is_redirect:
        # Redirects are not followed: requests would carry GitLab's PRIVATE-TOKEN header to
        # wherever Location points. GitHub answers a renamed repository this way.
        return f"redirected to {short(response.headers.get('Location', '?'), 200)} (not followed)"
    try:
        data = response.json()
    except ValueError:
        return short(response.reason or "", 200)
    if isinstance(data, dict):
        message = data.get("message") or data.get("error") or ""
        return short(str(message), 200)
    return ""
