"""What the server and API tests share: a real Git remote, an in-memory fleet, a store, an app.

`Harness` wires `create_app` exactly as `metalform serve` does, except that the engine uses
the in-memory BMC provider and the forge clients point at the fake forge on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from metalform.api import MetalformApp, create_app
from metalform.server.config import ServerConfig, config_from_mapping
from metalform.store import Store
from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine
from tests.fakes.forge import FakeForge
from tests.fixtures.ordering import CASE, fleet
from webhooks.github import sign

TOKENS = {
    "viewer": "tok-viewer-0123456789",
    "planner": "tok-planner-0123456789",
    "operator": "tok-operator-0123456789",
}
GITHUB_SECRET = "gh-webhook-secret-for-tests"
GITLAB_SECRET = "gl-webhook-token-for-tests"
GITHUB_REPO = "acme/infra"
GITLAB_REPO = "acme/infra-gl"
GITLAB_PROJECT_ID = 77


def _git_env() -> dict[str, str]:
    return {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }


class GitRemote:
    """A bare repository (the "forge") and a working clone that pushes to it."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        self._git(root, "init", "-q", "--bare", "-b", "main", str(self.bare))
        self._git(root, "clone", "-q", str(self.bare), str(self.work))
        self._git(self.work, "checkout", "-q", "-b", "main")
        shutil.copytree(CASE, self.work / "infra")
        self.main = self.commit("initial desired state")
        self.push("main")

    @staticmethod
    def _git(cwd: Path, *args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=cwd, env=_git_env(), check=True, capture_output=True, text=True
        )
        return result.stdout.strip()

    def git(self, *args: str) -> str:
        return self._git(self.work, *args)

    @property
    def url(self) -> str:
        return str(self.bare)

    def write(self, relative: str, text: str) -> None:
        path = self.work / "infra" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def push(self, branch: str) -> None:
        self.git("push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")

    def checkout(self, branch: str, *, new: bool = False, start: str = "main") -> None:
        if new:
            self.git("checkout", "-q", "-B", branch, start)
        else:
            self.git("checkout", "-q", branch)


def thread_stacks() -> str:
    """Where every thread of the process is, for a test that timed out waiting."""
    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- {names.get(ident, ident)}\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items()
    )


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def config_mapping(
    remote: GitRemote, data_dir: Path, forge: FakeForge | None, **overrides: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "database": f"sqlite:///{data_dir / 'metalform.db'}",
        "dataDir": str(data_dir / "data"),
        "repository": {"url": remote.url, "branch": "main", "path": "infra"},
        "driftInterval": "0",
        "pollInterval": "0",
        "tokens": [
            {"name": role, "role": role, "sha256": digest(value)} for role, value in TOKENS.items()
        ],
        "github": {
            "webhookSecret": {"fromEnv": "TEST_GITHUB_SECRET"},
            "allowedApprovers": ["alice"],
            "repository": GITHUB_REPO,
        },
        "gitlab": {
            "webhookToken": {"fromEnv": "TEST_GITLAB_SECRET"},
            "allowedApprovers": ["alice"],
        },
    }
    if forge is not None:
        data["github"].update(apiUrl=forge.github_url, token={"fromEnv": "TEST_GITHUB_TOKEN"})
        data["gitlab"].update(apiUrl=forge.gitlab_url, token={"fromEnv": "TEST_GITLAB_TOKEN"})
    data.update(overrides)
    return data


@dataclass
class Harness:
    """An app on a real store and Git remote, with the memory fleet behind the engine."""

    remote: GitRemote
    fleet: MemoryFleet
    config: ServerConfig
    store: Store
    app: MetalformApp
    client: falcon.testing.TestClient
    forge: FakeForge | None = None
    deliveries: int = field(default=0)

    @property
    def service(self) -> Any:
        return self.app.service

    def headers(self, role: str | None = "operator") -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}

    def get(self, path: str, role: str | None = "viewer", **kw: Any) -> falcon.testing.Result:
        return self.client.simulate_get(
            path, headers={**self.headers(role), **kw.pop("headers", {})}, **kw
        )

    def post(self, path: str, role: str | None = "operator", **kw: Any) -> falcon.testing.Result:
        return self.client.simulate_post(
            path, headers={**self.headers(role), **kw.pop("headers", {})}, **kw
        )

    def idle(self, timeout: float = 60.0) -> None:
        """Wait for every queued job. A job takes well under a second; the bound is for a
        loaded CI machine (a drift plan once took over 20 s there), and a hang prints where
        every thread is."""
        if not self.service.workers.wait_idle(timeout):
            pytest.fail(f"jobs did not finish in {timeout:g} s; threads:\n{thread_stacks()}")

    def plan(self, revision: str | None = None) -> dict[str, Any]:
        """Plan through the API and wait for the result."""
        body = {"revision": revision} if revision else {}
        result = self.post("/api/v1/plans", role="planner", json=body)
        assert result.status_code == 202, result.text
        self.idle()
        plan = self.get(f"/api/v1/plans/{result.json['id']}").json
        return dict(plan)

    def apply(self, plan_id: str) -> dict[str, Any]:
        result = self.post(f"/api/v1/plans/{plan_id}/apply")
        assert result.status_code == 202, result.text
        self.idle()
        return dict(self.get(f"/api/v1/applies/{result.json['applyId']}").json)

    # --- webhook deliveries ----------------------------------------------------------

    def github(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        delivery: str | None = None,
        secret: str = GITHUB_SECRET,
    ) -> falcon.testing.Result:
        body = json.dumps(payload).encode()
        self.deliveries += 1
        headers = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
        }
        return self.client.simulate_post("/webhooks/github", body=body, headers=headers)

    def gitlab(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        delivery: str | None = None,
        token: str = GITLAB_SECRET,
    ) -> falcon.testing.Result:
        headers = {
            "X-Gitlab-Event": event,
            "X-Gitlab-Token": token,
            "X-Gitlab-Event-UUID": delivery or str(uuid.uuid4()),
            "Content-Type": "application/json",
        }
        return self.client.simulate_post(
            "/webhooks/gitlab", body=json.dumps(payload).encode(), headers=headers
        )

    def events(self, type: str) -> list[Any]:
        return [e for e in self.store.list_events(0, limit=500) if e.type == type]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def make_harness(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    forge: FakeForge | None,
    live: MemoryFleet | None = None,
    database: str | None = None,
    **overrides: Any,
) -> Iterator[Harness]:
    """Build a harness; a generator so fixtures close the app and the store after the test."""
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    monkeypatch.setenv("TEST_GITHUB_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("TEST_GITLAB_SECRET", GITLAB_SECRET)
    if forge is not None:
        monkeypatch.setenv("TEST_GITHUB_TOKEN", forge.github_token)
        monkeypatch.setenv("TEST_GITLAB_TOKEN", forge.gitlab_token)
    remote = GitRemote(tmp_path)
    mapping = config_mapping(remote, tmp_path, forge, **overrides)
    if database is not None:
        mapping["database"] = database
    config = config_from_mapping(mapping, base_dir=tmp_path, environ={})
    memory = live or fleet()
    factory = memory_factory(memory)
    engine = Engine(factories={"redfish": factory, "ipmi": factory})
    store = Store.open(config.database)
    app = create_app(config, engine, store)
    client = falcon.testing.TestClient(app)
    try:
        yield Harness(remote, memory, config, store, app, client, forge)
    finally:
        app.stopping.set()
        app.hub.close()
        app.service.close(10)
        store.close()


# --- payloads, in the shape the forges send (only the fields Metalform reads) -------------


def _gh_repo() -> dict[str, Any]:
    return {
        "id": 4242,
        "full_name": GITHUB_REPO,
        "clone_url": f"https://github.example/{GITHUB_REPO}.git",
    }


def github_push(sha: str, branch: str = "main", before: str = "0" * 40) -> dict[str, Any]:
    return {
        "ref": f"refs/heads/{branch}",
        "before": before,
        "after": sha,
        "created": False,
        "deleted": False,
        "repository": _gh_repo(),
        "sender": {"login": "alice"},
    }


def github_pr(
    number: int,
    head_sha: str,
    action: str = "opened",
    head: str = "feature",
    base: str = "main",
    fork: bool = False,
) -> dict[str, Any]:
    head_repo = {"full_name": "mallory/infra" if fork else GITHUB_REPO}
    return {
        "action": action,
        "number": number,
        "repository": _gh_repo(),
        "sender": {"login": "bob"},
        "pull_request": {
            "number": number,
            "merged": False,
            "head": {"ref": head, "sha": head_sha, "repo": head_repo},
            "base": {"ref": base, "sha": "1" * 40, "repo": {"full_name": GITHUB_REPO}},
        },
    }


def github_comment(number: int, body: str, author: str, comment_id: int = 9001) -> dict[str, Any]:
    return {
        "action": "created",
        "repository": _gh_repo(),
        "sender": {"login": author},
        "issue": {"number": number, "pull_request": {"url": "x"}},
        "comment": {"id": comment_id, "body": body, "user": {"login": author}},
    }


def _gl_project() -> dict[str, Any]:
    return {
        "id": GITLAB_PROJECT_ID,
        "path_with_namespace": GITLAB_REPO,
        "git_http_url": f"https://gitlab.example/{GITLAB_REPO}.git",
    }


def gitlab_push(sha: str, branch: str = "main") -> dict[str, Any]:
    return {
        "object_kind": "push",
        "ref": f"refs/heads/{branch}",
        "before": "0" * 40,
        "after": sha,
        "user_username": "alice",
        "project": _gl_project(),
    }


def gitlab_mr(iid: int, head_sha: str, action: str = "open") -> dict[str, Any]:
    return {
        "object_kind": "merge_request",
        "user": {"username": "bob"},
        "project": _gl_project(),
        "object_attributes": {
            "iid": iid,
            "action": action,
            "source_branch": "feature",
            "target_branch": "main",
            "source_project_id": GITLAB_PROJECT_ID,
            "target_project_id": GITLAB_PROJECT_ID,
            "last_commit": {"id": head_sha},
        },
    }


def gitlab_note(iid: int, body: str, author: str, head_sha: str) -> dict[str, Any]:
    return {
        "object_kind": "note",
        "user": {"username": author},
        "project": _gl_project(),
        "object_attributes": {
            "id": 5001,
            "note": body,
            "noteable_type": "MergeRequest",
            "action": "create",
        },
        "merge_request": {
            "iid": iid,
            "source_branch": "feature",
            "target_branch": "main",
            "source_project_id": GITLAB_PROJECT_ID,
            "target_project_id": GITLAB_PROJECT_ID,
            "last_commit": {"id": head_sha},
        },
    }
