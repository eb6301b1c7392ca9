"""The tracked repository: a Git remote and branch, followed in a working clone.

The clone lives under the server's data dir and never checks anything out: plans read exact
commits from the object store (`Engine.plan(path, rev=sha)`), so concurrent plans of different
commits never disturb each other and a fetch can run while they read. Fetches are serialized.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import git

from metalform.server.config import redact_url
from reconciler.errors import MetalformError
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.server.repository")

GIT_TIMEOUT_SECONDS = 120.0
_SHA = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # fullmatch: `$` accepts a final newline
# Never wait for a password on a terminal the server does not have.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true"}


class RepositoryUnavailable(MetalformError):
    """The remote cannot be fetched or a commit is not known."""


@dataclass(frozen=True)
class FetchState:
    """The outcome of the last fetch, for /readyz and /api/v1/status."""

    ok: bool
    at: float
    head: str | None
    error: str | None = None


def repository_key(url: str, branch: str, path: str) -> str:
    """The store's key of a tracked repository: URL (without credentials), branch and path."""
    return f"{redact_url(url)}#{branch}:{path}"


def git_reason(exc: git.GitCommandError) -> str:
    """Why git failed, from its stderr: the `fatal:`/`error:` lines, else the last line.

    GitPython wraps stderr as `\n  stderr: '...'` around git's own lines, so its last line is
    often the closing quote alone; the progress lines before the error ("Cloning into ...")
    say nothing of the cause.
    """
    text = str(exc.stderr or "").strip()
    text = text.removeprefix("stderr:").strip().removeprefix("'").removesuffix("'")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return "; ".join(errors or lines[-1:]) or f"git exited with status {exc.status}"


class Tracker:
    """Follows `branch` of the remote `url` in a clone under `data_dir`."""

    def __init__(self, url: str, branch: str, path: str, data_dir: Path) -> None:
        self.url = url
        self.branch = branch
        self.path = path
        self.clone_dir = data_dir / "repository"
        self.key = repository_key(url, branch, path)
        self._lock = threading.Lock()
        self._last: FetchState | None = None
        self._register_url_secret()

    def _register_url_secret(self) -> None:
        # A token embedded in the URL must never show in an error or a log line.
        match = re.search(r"://([^/@]*)@", self.url)
        if match:
            for userinfo in {match.group(1), unquote(match.group(1))}:  # as written, decoded
                REDACTOR.add(userinfo)
                username, sep, secret = userinfo.partition(":")
                if sep:
                    REDACTOR.add_login(username, secret)

    @property
    def source_path(self) -> Path:
        """The desired-state folder inside the clone, as `Engine.plan` wants it."""
        path = self.clone_dir / self.path
        # The clone has no checkout; the folder must exist for the engine to find the
        # repository from it (it only reads commits, never these files).
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def last_fetch(self) -> FetchState | None:
        return self._last

    def _scrub(self, text: str) -> str:
        text = text.replace(self.url, redact_url(self.url))
        return REDACTOR(text)

    def _error(self, action: str, exc: Exception) -> RepositoryUnavailable:
        if isinstance(exc, git.GitCommandError):
            detail = git_reason(exc)
        else:
            detail = f"{type(exc).__name__}: {exc}"
        return RepositoryUnavailable(self._scrub(f"git {action} of {self.url} failed: {detail}"))

    def _open(self) -> git.Repo:
        if (self.clone_dir / ".git").is_dir():
            repo = git.Repo(self.clone_dir)
            if repo.remotes.origin.url != self.url:
                repo.remotes.origin.set_url(self.url)
            return repo
        self.clone_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            return git.Repo.clone_from(
                self.url,
                self.clone_dir,
                no_checkout=True,
                env=_GIT_ENV,
                kill_after_timeout=GIT_TIMEOUT_SECONDS,
            )
        except (git.GitCommandError, OSError) as exc:
            raise self._error("clone", exc) from None

    def fetch(self, extra_refspecs: Sequence[str] = ()) -> str:
        """Fetch every branch (and `extra_refspecs`); returns the tracked branch's head."""
        with self._lock:
            try:
                repo = self._open()
                try:
                    with repo.git.custom_environment(**_GIT_ENV):
                        repo.git.fetch(
                            "--prune",
                            "--no-tags",
                            "origin",
                            "+refs/heads/*:refs/remotes/origin/*",
                            kill_after_timeout=GIT_TIMEOUT_SECONDS,
                        )
                        for spec in extra_refspecs:
                            try:
                                repo.git.fetch(
                                    "--no-tags",
                                    "origin",
                                    spec,
                                    kill_after_timeout=GIT_TIMEOUT_SECONDS,
                                )
                            except git.GitCommandError:
                                # Forge-specific refs (pull/N/head) may not exist elsewhere.
                                log.debug("fetch of %s failed", spec)
                    head = self._head(repo, self.branch)
                finally:
                    repo.close()
            except RepositoryUnavailable as exc:
                self._last = FetchState(False, time.time(), None, str(exc))
                raise
            except (git.GitCommandError, OSError, ValueError) as exc:
                error = self._error("fetch", exc)
                self._last = FetchState(False, time.time(), None, str(error))
                raise error from None
            self._last = FetchState(True, time.time(), head)
            return head

    @staticmethod
    def _commit(repo: git.Repo, name: str) -> str | None:
        """The commit `name` names, verified to exist (gitpython trusts a full sha as is)."""
        if name.startswith("-"):
            return None
        try:
            return (
                str(
                    repo.git.rev_parse(
                        "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"
                    )
                ).strip()
                or None
            )
        except git.GitCommandError:
            return None

    def _head(self, repo: git.Repo, branch: str) -> str:
        head = self._commit(repo, f"refs/remotes/origin/{branch}")
        if head is None:
            raise RepositoryUnavailable(f"branch {branch} does not exist in {redact_url(self.url)}")
        return head

    def resolve(self, ref: str | None) -> str:
        """The commit a branch name, tag or sha names (branches as last fetched)."""
        if not (self.clone_dir / ".git").is_dir():
            self.fetch()
        repo = git.Repo(self.clone_dir)
        try:
            if ref is None:
                return self._head(repo, self.branch)
            for candidate in (f"refs/remotes/origin/{ref}", ref):
                found = self._commit(repo, candidate)
                if found is not None:
                    return found
            raise RepositoryUnavailable(f"unknown revision {ref!r}")
        finally:
            repo.close()

    def has_commit(self, sha: str) -> bool:
        if not _SHA.fullmatch(sha) or not (self.clone_dir / ".git").is_dir():
            return False
        repo = git.Repo(self.clone_dir)
        try:
            return self._commit(repo, sha) is not None
        finally:
            repo.close()

    def branch_of(self, ref: str | None) -> str | None:
        """`ref` when it names a branch of the remote (as last fetched), else None."""
        if ref is None:
            return self.branch
        if _SHA.fullmatch(ref) or not (self.clone_dir / ".git").is_dir():
            return None
        repo = git.Repo(self.clone_dir)
        try:
            return ref if self._commit(repo, f"refs/remotes/origin/{ref}") else None
        finally:
            repo.close()

    def reachable(self) -> tuple[bool, str]:
        """Whether the last fetch worked (readiness); never fetches on the request thread."""
        last = self._last
        if last is None:
            return False, "not fetched yet"
        if not last.ok:
            return False, last.error or "fetch failed"
        return True, f"fetched {int(time.time() - last.at)}s ago"


def pull_request_refspecs(forge: str, number: int) -> list[str]:
    """Where a forge keeps the head of a pull request outside its branches (forks)."""
    if forge == "github":
        return [f"+refs/pull/{number}/head:refs/remotes/origin/pr/{number}"]
    if forge == "gitlab":
        return [f"+refs/merge-requests/{number}/head:refs/remotes/origin/mr/{number}"]
    return []
