"""`metalform serve` as users run it: a real waitress server on a free loopback port."""

from __future__ import annotations

import hashlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.server.harness import GitRemote

TOKEN = "e2e-operator-token-0123456789"
CONFIG = """\
listen: 127.0.0.1:0
database: sqlite:///state/metalform.db
dataDir: state
repository: {{url: "{url}", branch: main, path: infra}}
pollInterval: 200ms
driftInterval: 0
tokens:
  - {{name: e2e, role: operator, token: {{fromEnv: E2E_TOKEN}}}}
"""
# No Server in this desired state: the real providers are installed, and nothing here may
# reach past loopback.
DESIRED = """\
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: base}
spec: {attributes: {ProcVirtualization: Enabled}}
"""


def _lines(stream: object, out: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        out.put(line)


def test_serve_end_to_end(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    shutil.rmtree(remote.work / "infra")
    remote.write("templates.yaml", DESIRED)
    sha = remote.commit("templates only")
    remote.push("main")
    config = tmp_path / "server.yaml"
    config.write_text(CONFIG.format(url=remote.url), encoding="utf-8")
    env = {**os.environ, "E2E_TOKEN": TOKEN}
    env.pop("METALFORM_LISTEN", None)
    env.pop("METALFORM_DATABASE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "metalform.cli", "serve", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        base = None
        deadline = time.monotonic() + 30
        while base is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert process.poll() is None, "".join(seen)
                continue
            seen.append(line)
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            base = match.group(1) if match else None
        assert base is not None, "".join(seen)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with requests.Session() as http:
            assert http.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
            assert http.get(f"{base}/api/v1/status", timeout=5).status_code == 401
            history: list[dict[str, object]] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                history = http.get(f"{base}/api/v1/history", headers=auth, timeout=5).json()[
                    "items"
                ]
                if history and history[0]["status"] == "succeeded":
                    break
                time.sleep(0.1)
            assert history and history[0]["revision"] == sha, history
            created = http.post(
                f"{base}/api/v1/plans", json={"revision": "main"}, headers=auth, timeout=5
            )
            assert created.status_code == 202
            plan_id = created.json()["id"]
            plan: dict[str, object] = {}
            while plan.get("status") not in ("succeeded", "failed"):
                time.sleep(0.1)
                plan = http.get(f"{base}/api/v1/plans/{plan_id}", headers=auth, timeout=5).json()
            assert plan["status"] == "succeeded", plan
            applied = http.post(f"{base}/api/v1/plans/{plan_id}/apply", headers=auth, timeout=5)
            assert applied.status_code == 202, applied.text
            with http.get(
                f"{base}/api/v1/applies/{applied.json()['applyId']}/events",
                headers=auth,
                stream=True,
                timeout=10,
            ) as events:
                assert events.headers["Content-Type"].startswith("text/event-stream")
                text = events.text
            assert "event: apply.succeeded" in text
            assert http.get(f"{base}/readyz", timeout=5).status_code == 200
            metrics = http.get(f"{base}/metrics", timeout=5).text
            assert "metalform_plans_total" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        reader.join(timeout=10)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    while not lines.empty():
        seen.append(lines.get())
    log = "".join(seen)
    assert "stopped" in log
    assert "Traceback" not in log
    assert TOKEN not in log
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    assert digest not in log
