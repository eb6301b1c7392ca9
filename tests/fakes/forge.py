"""A wire-level fake of the GitHub and GitLab REST routes Metalform's forge clients use.

No forge can run on loopback, so this Falcon app, served by waitress on 127.0.0.1, speaks the
same HTTP as the real APIs for the few routes we call: same paths, auth headers, status codes,
error bodies, pagination headers, and the quirks that matter (GitHub's 140-character status
description limit, GitLab refusing a pending -> pending status transition). It records every
comment and status so tests can assert what a forge user would see.

GitHub is served under `/github/api/v3` (the GitHub Enterprise layout, so base-path handling
is exercised) and GitLab under `/gitlab/api/v4`.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlencode

import falcon
import waitress
from waitress import wasyncore

GITHUB_PREFIX = "/github/api/v3"
GITLAB_PREFIX = "/gitlab/api/v4"
GITHUB_STATES = {"error", "failure", "pending", "success"}
GITLAB_STATES = {"pending", "running", "success", "failed", "canceled"}
GITLAB_FINISHED = {"success", "failed", "canceled"}


@dataclass
class Comment:
    """A PR comment (GitHub) or MR note (GitLab) as the forge stores it."""

    id: int
    forge: str
    repository: str
    number: int
    body: str
    author: str
    updates: int = 0
    system: bool = False


@dataclass(frozen=True)
class Status:
    """One commit status record (GitLab updates an unfinished one in place, GitHub never)."""

    id: int
    forge: str
    repository: str
    sha: str
    state: str
    context: str
    description: str | None
    target_url: str | None


@dataclass(frozen=True)
class Call:
    forge: str
    method: str
    path: str
    status: int
    auth: bool


@dataclass
class Failure:
    """An injected answer for the next matching calls."""

    status: int
    message: str
    method: str | None
    path_contains: str | None
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


class FakeForge:
    """GitHub + GitLab on one loopback port. `start()` / `stop()`, or use as a context manager."""

    def __init__(
        self,
        github_token: str = "ghs-fake-github-token-0123456789",
        gitlab_token: str = "glpat-fake-gitlab-token-0123456789",
        bot_login: str = "metalform-bot",
    ) -> None:
        self.github_token = github_token
        self.gitlab_token = gitlab_token
        self.bot_login = bot_login
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.app = self._build_app()
        self.reset()

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> FakeForge:
        # Loopback only; port 0 lets the OS pick a free port (parallel test workers).
        self._server = waitress.create_server(self.app, host="127.0.0.1", port=0, threads=4)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name="fake-forge", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        # Our own loop instead of server.run(): it stops on a flag, and it is this thread that
        # closes every socket (listener and kept-alive connections), so none leaks a warning.
        server = self._server
        socket_map = server._map
        try:
            while not self._stopping.is_set():
                wasyncore.loop(timeout=0.05, map=socket_map, count=1)
        finally:
            for dispatcher in list(socket_map.values()):
                dispatcher.close()
            server.task_dispatcher.shutdown()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeForge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "FakeForge is not started"
        return f"http://127.0.0.1:{self._server.effective_port}"

    @property
    def github_url(self) -> str:
        """API base URL for `GitHubClient(api_url=...)`."""
        return self.base_url + GITHUB_PREFIX

    @property
    def gitlab_url(self) -> str:
        """API base URL for `GitLabClient(api_url=...)`."""
        return self.base_url + GITLAB_PREFIX

    # --- state seen by tests -------------------------------------------------------------

    def reset(self) -> None:
        """Forget every comment, status, call and injected failure."""
        with self._lock:
            self._ids = itertools.count(1001)
            self._comments: dict[int, Comment] = {}
            self._statuses: list[Status] = []
            self._heads: dict[tuple[str, str, int], str] = {}
            self._failures: list[Failure] = []
            self._calls: list[Call] = []

    def comments(self, forge: str, repository: str, number: int) -> list[Comment]:
        """Comments on one PR/MR, oldest first (copies: later changes do not show)."""
        with self._lock:
            return [
                replace(c)
                for c in self._comments.values()
                if (c.forge, c.repository, c.number) == (forge, str(repository), number)
            ]

    def statuses(self, forge: str | None = None, sha: str | None = None) -> list[Status]:
        """Status records, oldest first."""
        with self._lock:
            return [
                s
                for s in self._statuses
                if (forge is None or s.forge == forge) and (sha is None or s.sha == sha)
            ]

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def seed_comment(
        self, forge: str, repository: str, number: int, body: str, author: str = "alice"
    ) -> Comment:
        """A comment written by someone else (or an earlier Metalform), already on the PR."""
        with self._lock:
            comment = Comment(next(self._ids), forge, str(repository), number, body, author)
            self._comments[comment.id] = comment
            return replace(comment)

    def delete_comment(self, comment_id: int) -> None:
        with self._lock:
            del self._comments[comment_id]

    def set_head(self, forge: str, repository: str, number: int, sha: str) -> None:
        with self._lock:
            self._heads[(forge, str(repository), number)] = sha

    def fail(
        self,
        status: int,
        message: str = "Server Error",
        *,
        method: str | None = None,
        path_contains: str | None = None,
        count: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `count` matching calls with `status` and a forge-style error body."""
        with self._lock:
            self._failures.append(
                Failure(status, message, method, path_contains, count, dict(headers or {}))
            )

    # --- the app ---------------------------------------------------------------------------

    def _build_app(self) -> falcon.App[falcon.Request, falcon.Response]:
        app = falcon.App(middleware=[_Gate(self)])
        gh = _GitHub(self)
        app.add_route(
            f"{GITHUB_PREFIX}/repos/{{owner}}/{{repo}}/issues/{{number:int}}/comments",
            gh,
            suffix="comments",
        )
        app.add_route(
            f"{GITHUB_PREFIX}/repos/{{owner}}/{{repo}}/issues/comments/{{cid:int}}",
            gh,
            suffix="comment",
        )
        app.add_route(
            f"{GITHUB_PREFIX}/repos/{{owner}}/{{repo}}/statuses/{{sha}}", gh, suffix="status"
        )
        app.add_route(
            f"{GITHUB_PREFIX}/repos/{{owner}}/{{repo}}/pulls/{{number:int}}", gh, suffix="pull"
        )
        gl = _GitLab(self)
        app.add_route(
            f"{GITLAB_PREFIX}/projects/{{project}}/merge_requests/{{iid:int}}/notes",
            gl,
            suffix="notes",
        )
        app.add_route(
            f"{GITLAB_PREFIX}/projects/{{project}}/merge_requests/{{iid:int}}/notes/{{nid:int}}",
            gl,
            suffix="note",
        )
        app.add_route(f"{GITLAB_PREFIX}/projects/{{project}}/statuses/{{sha}}", gl, suffix="status")
        app.add_route(
            f"{GITLAB_PREFIX}/projects/{{project}}/merge_requests/{{iid:int}}", gl, suffix="mr"
        )
        return app

    # Helpers used by the resources, under the lock.

    def _new_comment(self, forge: str, repository: str, number: int, body: str) -> Comment:
        comment = Comment(next(self._ids), forge, repository, number, body, self.bot_login)
        self._comments[comment.id] = comment
        return comment


def _forge_of(path: str) -> str | None:
    if path.startswith(GITHUB_PREFIX + "/"):
        return "github"
    if path.startswith(GITLAB_PREFIX + "/"):
        return "gitlab"
    return None


def _error(resp: falcon.Response, forge: str, status: int, message: str) -> None:
    resp.status = status
    resp.media = (
        {"message": message, "documentation_url": "https://docs.github.com/rest"}
        if forge == "github"
        else {"message": message}
    )


class _Gate:
    """Middleware: keep %2F in GitLab project ids, check auth, inject failures, record calls."""

    def __init__(self, fake: FakeForge) -> None:
        self.fake = fake

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        # The WSGI server decodes PATH_INFO, turning GitLab's `group%2Fproject` id into two
        # segments; route on the raw path instead, as GitLab does.
        raw = req.env.get("REQUEST_URI", "").split("?", 1)[0]
        if raw.startswith(GITLAB_PREFIX + "/projects/"):
            req.path = raw
        forge = _forge_of(req.path)
        if forge is None:
            return
        if forge == "github":
            authorized = req.get_header("Authorization") == f"Bearer {self.fake.github_token}"
            denial = "Bad credentials"
        else:
            authorized = req.get_header("PRIVATE-TOKEN") == self.fake.gitlab_token
            denial = "401 Unauthorized"
        req.context.forge = forge
        req.context.authorized = authorized
        if not authorized:
            _error(resp, forge, 401, denial)
            resp.complete = True
            return
        with self.fake._lock:
            for failure in self.fake._failures:
                if failure.remaining > 0 and failure.matches(req.method, req.path):
                    failure.remaining -= 1
                    _error(resp, forge, failure.status, failure.message)
                    for name, value in failure.headers.items():
                        resp.set_header(name, value)
                    resp.complete = True
                    return

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        forge = getattr(req.context, "forge", None)
        if forge is None:
            return
        status = int(str(resp.status).split()[0])
        with self.fake._lock:
            self.fake._calls.append(
                Call(forge, req.method, req.path, status, req.context.authorized)
            )


def _body_text(req: falcon.Request) -> str | None:
    media = req.get_media(default_when_empty=None)
    body = media.get("body") if isinstance(media, dict) else None
    return body if isinstance(body, str) else None


def _page(req: falcon.Request, items: list[Any], default_per_page: int) -> tuple[list[Any], int]:
    per_page = min(max(req.get_param_as_int("per_page", default=default_per_page), 1), 100)
    page = max(req.get_param_as_int("page", default=1), 1)
    start = (page - 1) * per_page
    next_page = page + 1 if start + per_page < len(items) else 0
    return items[start : start + per_page], next_page


class _GitHub:
    def __init__(self, fake: FakeForge) -> None:
        self.fake = fake

    @staticmethod
    def _json(comment: Comment) -> dict[str, Any]:
        return {"id": comment.id, "body": comment.body, "user": {"login": comment.author}}

    def on_get_comments(
        self, req: falcon.Request, resp: falcon.Response, owner: str, repo: str, number: int
    ) -> None:
        repository = f"{owner}/{repo}"
        with self.fake._lock:
            items = [
                c
                for c in self.fake._comments.values()
                if (c.forge, c.repository, c.number) == ("github", repository, number)
            ]
            page_items, next_page = _page(req, items, 30)
            resp.media = [self._json(c) for c in page_items]
        if next_page:
            query = urlencode({"per_page": req.get_param("per_page") or 30, "page": next_page})
            url = f"{req.prefix}{req.path}?{query}"
            resp.set_header("Link", f'<{url}>; rel="next"')

    def on_post_comments(
        self, req: falcon.Request, resp: falcon.Response, owner: str, repo: str, number: int
    ) -> None:
        body = _body_text(req)
        if not body or len(body) > 65536:
            _error(resp, "github", 422, "Validation Failed")
            return
        with self.fake._lock:
            comment = self.fake._new_comment("github", f"{owner}/{repo}", number, body)
            resp.media = self._json(comment)
        resp.status = 201

    def on_patch_comment(
        self, req: falcon.Request, resp: falcon.Response, owner: str, repo: str, cid: int
    ) -> None:
        body = _body_text(req)
        with self.fake._lock:
            comment = self.fake._comments.get(cid)
            if comment is None or (comment.forge, comment.repository) != (
                "github",
                f"{owner}/{repo}",
            ):
                _error(resp, "github", 404, "Not Found")
                return
            if not body or len(body) > 65536:
                _error(resp, "github", 422, "Validation Failed")
                return
            comment.body = body
            comment.updates += 1
            resp.media = self._json(comment)

    def on_post_status(
        self, req: falcon.Request, resp: falcon.Response, owner: str, repo: str, sha: str
    ) -> None:
        media = req.get_media(default_when_empty={})
        state = media.get("state")
        description = media.get("description")
        if state not in GITHUB_STATES or (description is not None and len(description) > 140):
            _error(resp, "github", 422, "Validation Failed")
            return
        with self.fake._lock:
            status = Status(
                next(self.fake._ids),
                "github",
                f"{owner}/{repo}",
                sha,
                state,
                media.get("context") or "default",
                description,
                media.get("target_url"),
            )
            self.fake._statuses.append(status)
        resp.status = 201
        resp.media = {"id": status.id, "state": state, "context": status.context}

    def on_get_pull(
        self, req: falcon.Request, resp: falcon.Response, owner: str, repo: str, number: int
    ) -> None:
        with self.fake._lock:
            sha = self.fake._heads.get(("github", f"{owner}/{repo}", number))
        if sha is None:
            _error(resp, "github", 404, "Not Found")
            return
        resp.media = {"number": number, "head": {"sha": sha}}


class _GitLab:
    def __init__(self, fake: FakeForge) -> None:
        self.fake = fake

    @staticmethod
    def _json(note: Comment) -> dict[str, Any]:
        return {
            "id": note.id,
            "body": note.body,
            "author": {"username": note.author},
            "system": note.system,
            "noteable_type": "MergeRequest",
        }

    def on_get_notes(
        self, req: falcon.Request, resp: falcon.Response, project: str, iid: int
    ) -> None:
        key = unquote(project)
        with self.fake._lock:
            items = [
                n
                for n in self.fake._comments.values()
                if (n.forge, n.repository, n.number) == ("gitlab", key, iid)
            ]
            if req.get_param("sort", default="desc") == "desc":
                items.reverse()
            page_items, next_page = _page(req, items, 20)
            resp.media = [self._json(n) for n in page_items]
        resp.set_header("X-Next-Page", str(next_page) if next_page else "")
        resp.set_header("X-Page", str(req.get_param_as_int("page", default=1)))

    def on_post_notes(
        self, req: falcon.Request, resp: falcon.Response, project: str, iid: int
    ) -> None:
        body = _body_text(req)
        if not body:
            _error(resp, "gitlab", 400, "400 Bad request - body is missing")
            return
        with self.fake._lock:
            note = self.fake._new_comment("gitlab", unquote(project), iid, body)
            resp.media = self._json(note)
        resp.status = 201

    def on_put_note(
        self, req: falcon.Request, resp: falcon.Response, project: str, iid: int, nid: int
    ) -> None:
        body = _body_text(req)
        with self.fake._lock:
            note = self.fake._comments.get(nid)
            if note is None or (note.forge, note.repository, note.number) != (
                "gitlab",
                unquote(project),
                iid,
            ):
                _error(resp, "gitlab", 404, "404 Not found")
                return
            if not body:
                _error(resp, "gitlab", 400, "400 Bad request - body is missing")
                return
            note.body = body
            note.updates += 1
            resp.media = self._json(note)

    def on_post_status(
        self, req: falcon.Request, resp: falcon.Response, project: str, sha: str
    ) -> None:
        media = req.get_media(default_when_empty={})
        state = media.get("state")
        name = media.get("name") or media.get("context") or "default"
        if state not in GITLAB_STATES:
            _error(resp, "gitlab", 400, "400 Bad request - state does not have a valid value")
            return
        key = unquote(project)
        with self.fake._lock:
            latest = next(
                (
                    s
                    for s in reversed(self.fake._statuses)
                    if (s.forge, s.repository, s.sha, s.context) == ("gitlab", key, sha, name)
                ),
                None,
            )
            # GitLab's status state machine: an unfinished status is updated in place, a
            # finished one is followed by a new record, and a transition to the state it is
            # already in is refused.
            if latest is not None and latest.state not in GITLAB_FINISHED:
                if latest.state == state:
                    event = "enqueue" if state == "pending" else "run"
                    _error(
                        resp,
                        "gitlab",
                        400,
                        f"Cannot transition status via :{event} from :{state} "
                        f'(Reason(s): Status cannot transition via "{event}")',
                    )
                    return
                status = replace(
                    latest,
                    state=state,
                    description=media.get("description"),
                    target_url=media.get("target_url"),
                )
                self.fake._statuses[self.fake._statuses.index(latest)] = status
            else:
                status = Status(
                    next(self.fake._ids),
                    "gitlab",
                    key,
                    sha,
                    state,
                    name,
                    media.get("description"),
                    media.get("target_url"),
                )
                self.fake._statuses.append(status)
        resp.status = 201
        resp.media = {"id": status.id, "sha": sha, "status": state, "name": name}

    def on_get_mr(self, req: falcon.Request, resp: falcon.Response, project: str, iid: int) -> None:
        with self.fake._lock:
            sha = self.fake._heads.get(("gitlab", unquote(project), iid))
        if sha is None:
            _error(resp, "gitlab", 404, "404 Not found")
            return
        resp.media = {"iid": iid, "sha": sha}
