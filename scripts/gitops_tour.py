"""The GitOps tour of the README, on the local lab: `make tour` (after `make demo`).

Everything is real but the forge: a bare Git repository stands for GitHub, and a wire-level
fake of GitHub's REST API (the one the tests use) receives the PR comment and commit status.
`metalform serve` runs as a separate process on loopback against the lab's BMCs and Docker
engine. Webhook deliveries are signed exactly as GitHub signs them.

Steps: push a commit and deliver the push webhook (the server plans it); open a pull request
(the plan is posted as a comment, with a commit status); comment `/metalform apply` (the
server applies that PR's plan); follow the apply's event stream; query the status.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes.forge import FakeForge  # noqa: E402  (the fake forge of the test suite)

REPO = "acme/infra"
SECRET = "tour-webhook-secret-" + uuid.uuid4().hex[:8]
TOKEN = "tour-operator-token-" + uuid.uuid4().hex[:8]


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def show(text: str) -> None:
    print(text.rstrip(), flush=True)


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Alice",
        "GIT_AUTHOR_EMAIL": "alice@example.org",
        "GIT_COMMITTER_NAME": "Alice",
        "GIT_COMMITTER_EMAIL": "alice@example.org",
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def deliver(base: str, event: str, payload: dict[str, Any]) -> requests.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return requests.post(
        f"{base}/webhooks/github",
        data=body,
        timeout=10,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
        },
    )


def repository() -> dict[str, Any]:
    return {"id": 1, "full_name": REPO, "clone_url": f"https://github.example/{REPO}.git"}


def wait(what: str, check: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    lab_env = ROOT / ".metalform-lab" / "env"
    if not lab_env.exists():
        raise SystemExit("start the lab first: make demo (or metalform lab up)")
    env = dict(os.environ)
    for line in lab_env.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
    work = Path(tempfile.mkdtemp(prefix="metalform-tour-"))
    forge = FakeForge().start()
    server: subprocess.Popen[str] | None = None
    try:
        step("A desired-state repository: a bare remote and a clone")
        bare, clone = work / "infra.git", work / "infra"
        git(work, "init", "-q", "--bare", "-b", "main", str(bare))
        git(work, "clone", "-q", str(bare), str(clone))
        shutil.copytree(ROOT / "inventory-example", clone, dirs_exist_ok=True)
        git(clone, "checkout", "-q", "-b", "main")
        git(clone, "add", "-A")
        git(clone, "commit", "-q", "-m", "Site yul1: servers, BIOS templates, services")
        git(clone, "push", "-q", "origin", "main")
        show(git(clone, "log", "--oneline", "-1"))

        step("metalform serve")
        config = work / "server.yaml"
        config.write_text(f"""listen: 127.0.0.1:0
database: sqlite:///{work}/metalform.db
dataDir: {work}/server
repository: {{url: "{bare}", branch: main, path: .}}
pollInterval: 0
driftInterval: 0
tokens:
  - {{name: tour, role: operator, token: {{fromEnv: TOUR_TOKEN}}}}
github:
  webhookSecret: {{fromEnv: TOUR_WEBHOOK_SECRET}}
  apiUrl: "{forge.github_url}"
  token: {{fromEnv: TOUR_GITHUB_TOKEN}}
  allowedApprovers: [alice]
  repository: {REPO}
""")
        show(config.read_text())
        env.update(
            TOUR_TOKEN=TOKEN, TOUR_WEBHOOK_SECRET=SECRET, TOUR_GITHUB_TOKEN=forge.github_token
        )
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "metalform"), "serve", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert server.stdout is not None
        base = ""
        while not base:
            line = server.stdout.readline()
            if not line:
                raise SystemExit("metalform serve exited")
            show(line)
            match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
            base = match.group(1) if match and "serving" in line else ""
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {TOKEN}"
        show(json.dumps(api.get(f"{base}/readyz", timeout=5).json()))

        step("Push to main: the push webhook plans the new commit")
        templates = clone / "bios" / "templates.yaml"
        templates.write_text(
            templates.read_text().replace("PowerCapWatts: 1200", "PowerCapWatts: 1100")
        )
        git(clone, "commit", "-q", "-am", "GPU hosts: cap power at 1100 W")
        git(clone, "push", "-q", "origin", "main")
        sha = git(clone, "rev-parse", "HEAD")
        answer = deliver(
            base,
            "push",
            {
                "ref": "refs/heads/main",
                "before": "0" * 40,
                "after": sha,
                "repository": repository(),
                "sender": {"login": "alice"},
            },
        )
        show(f"POST /webhooks/github (push) -> {answer.status_code} {answer.text}")

        plan_id = answer.json()["planId"]
        wait(
            "the push plan",
            lambda: (
                api.get(f"{base}/api/v1/plans/{plan_id}", timeout=5).json().get("status")
                in ("succeeded", "failed")
            ),
        )
        text = api.get(f"{base}/api/v1/plans/{plan_id}", params={"format": "text"}, timeout=10).text
        show(f"GET /api/v1/plans/{plan_id}?format=text")
        show(text)

        step("A pull request: its plan is posted as a comment, with a commit status")
        git(clone, "checkout", "-q", "-b", "spot-turbo")
        servers = clone / "servers" / "redfish.yaml"
        servers.write_text(
            servers.read_text().replace(
                "ProcTurboMode: Enabled   # canary: benchmarks with turbo on",
                "ProcTurboMode: Disabled  # canary done: back to the template",
            )
        )
        git(clone, "commit", "-q", "-am", "gpu-host-001: canary done, turbo off again")
        git(clone, "push", "-q", "origin", "spot-turbo")
        head = git(clone, "rev-parse", "HEAD")
        forge.set_head("github", REPO, 7, head)
        answer = deliver(
            base,
            "pull_request",
            {
                "action": "opened",
                "number": 7,
                "repository": repository(),
                "sender": {"login": "bob"},
                "pull_request": {
                    "number": 7,
                    "merged": False,
                    "head": {"ref": "spot-turbo", "sha": head, "repo": {"full_name": REPO}},
                    "base": {"ref": "main", "sha": sha, "repo": {"full_name": REPO}},
                },
            },
        )
        show(f"POST /webhooks/github (pull_request opened) -> {answer.status_code}")
        wait(
            "the commit status",
            lambda: [s for s in forge.statuses("github", head) if s.state != "pending"],
        )
        comments = forge.comments("github", REPO, 7)
        show(f"PR #7 has {len(comments)} comment(s) by {comments[0].author}:")
        show(comments[0].body)
        for status in forge.statuses("github", head):
            show(f"commit status {status.context}: {status.state} ({status.description})")

        step("/metalform apply, commented by an allowed approver")
        answer = deliver(
            base,
            "issue_comment",
            {
                "action": "created",
                "repository": repository(),
                "sender": {"login": "alice"},
                "issue": {"number": 7, "pull_request": {"url": "x"}},
                "comment": {"id": 9001, "body": "/metalform apply", "user": {"login": "alice"}},
            },
        )
        show(f"POST /webhooks/github (issue_comment) -> {answer.status_code} {answer.text}")

        def applied() -> Any:
            items = api.get(f"{base}/api/v1/history", timeout=5).json()["items"]
            done = [i for i in items if i.get("type") == "apply"]
            return done[0] if done else None

        record = wait("the apply", applied)
        show(f"GET /api/v1/applies/{record['id']}/events (Server-Sent Events)")
        with api.get(
            f"{base}/api/v1/applies/{record['id']}/events", stream=True, timeout=120
        ) as stream:
            for raw in stream.iter_lines(decode_unicode=True):
                if raw:
                    show(raw)
        result = api.get(f"{base}/api/v1/applies/{record['id']}", timeout=5).json()
        show(json.dumps({k: result[k] for k in ("status", "counts") if k in result}, indent=2))

        step("Status")
        show(json.dumps(api.get(f"{base}/api/v1/status", timeout=5).json(), indent=2))
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        forge.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
