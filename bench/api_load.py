"""API load benchmark: `metalform serve` on loopback with the in-memory BMC provider.

    python bench/api_load.py [--clients 50] [--seconds 10] [--servers 20] [--pr-rounds 5]

1. `--clients` concurrent clients call `GET /api/v1/status` for `--seconds`; prints requests/s
   and p50/p99 latency.
2. A pull-request webhook is delivered `--pr-rounds` times (a new commit each time); prints
   the time from the delivery to the plan comment showing the new commit on the fake forge.

Everything listens on 127.0.0.1 and every loop is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metalform.server.config import config_from_mapping
from metalform.server.serve import Server
from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine
from tests.fakes.forge import FakeForge
from webhooks.github import sign

TOKEN = "bench-viewer-token"
SECRET = "bench-webhook-secret"
REPO = "bench/infra"
HEADER = """apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BENCH_BMC_PASSWORD}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: base}
spec: {attributes: {ProcVirtualization: Enabled, SysProfile: PerfOptimized}}
"""
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: node-{i:04d}, labels: {{rack: r{rack}}}}}
spec:
  bmc: {{driver: redfish, address: "http://bmc-{i:04d}.invalid", credential: bmc}}
  power: On
  bios: {{template: base}}
"""


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Bench",
        "GIT_AUTHOR_EMAIL": "bench@example.invalid",
        "GIT_COMMITTER_NAME": "Bench",
        "GIT_COMMITTER_EMAIL": "bench@example.invalid",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repository(root: Path, servers: int) -> tuple[Path, Path]:
    bare, work = root / "remote.git", root / "work"
    git(root, "init", "-q", "--bare", "-b", "main", str(bare))
    git(root, "clone", "-q", str(bare), str(work))
    git(work, "checkout", "-q", "-b", "main")
    text = HEADER + "".join(SERVER.format(i=i, rack=i % 8) for i in range(servers))
    (work / "fleet.yaml").write_text(text, encoding="utf-8")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "fleet")
    git(work, "push", "-q", "origin", "HEAD:refs/heads/main")
    return bare, work


def make_fleet(servers: int) -> MemoryFleet:
    state = {
        "power": "On",
        "bios.attributes.ProcVirtualization": "Disabled",
        "bios.attributes.SysProfile": "PerfOptimized",
    }
    return MemoryFleet({f"Server/node-{i:04d}": {"state": dict(state)} for i in range(servers)})


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _client_process(base: str, clients: int, seconds: float) -> tuple[list[float], int]:
    """One load process: `clients` threads calling the status route until the deadline."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = time.monotonic() + seconds

    def client(n: int) -> None:
        with requests.Session() as http:
            http.headers["Authorization"] = f"Bearer {TOKEN}"
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    ok = http.get(f"{base}/api/v1/status", timeout=10).status_code == 200
                except requests.RequestException:
                    ok = False
                latencies[n].append(time.perf_counter() - t0)
                errors[n] += 0 if ok else 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 30)
    return [v for per in latencies for v in per], sum(errors)


def load_status(base: str, clients: int, seconds: float) -> None:
    # The clients run in processes of their own: in the server's process they would compete
    # with it for the interpreter lock and measure themselves as much as the server.
    processes = max(1, min(5, clients))
    shares = [
        clients // processes + (1 if i < clients % processes else 0) for i in range(processes)
    ]
    began = time.monotonic()
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_client_process, [base] * processes, shares, [seconds] * processes))
    elapsed = time.monotonic() - began
    flat = [v for latencies, _ in results for v in latencies]
    errors = sum(e for _, e in results)
    print(
        f"GET /api/v1/status, {clients} clients, {seconds:.0f}s: {len(flat)} requests, "
        f"{len(flat) / seconds:.0f} req/s, p50 {percentile(flat, 50) * 1000:.1f} ms, "
        f"p99 {percentile(flat, 99) * 1000:.1f} ms, errors {errors} "
        f"(wall {elapsed:.1f}s incl. process start)"
    )


def pr_payload(number: int, sha: str, action: str) -> dict[str, object]:
    repo = {"id": 1, "full_name": REPO, "clone_url": f"https://forge.invalid/{REPO}.git"}
    return {
        "action": action,
        "number": number,
        "repository": repo,
        "sender": {"login": "bob"},
        "pull_request": {
            "number": number,
            "merged": False,
            "head": {"ref": "feature", "sha": sha, "repo": {"full_name": REPO}},
            "base": {"ref": "main", "sha": "1" * 40, "repo": {"full_name": REPO}},
        },
    }


def webhook_to_comment(base: str, work: Path, forge: FakeForge, rounds: int) -> None:
    git(work, "checkout", "-q", "-B", "feature")
    timings = []
    with requests.Session() as http:
        for n in range(rounds):
            (work / "note.yaml").write_text(
                f"apiVersion: metalform/v1\nkind: BiosTemplate\nmetadata: {{name: n{n}}}\n"
                "spec: {attributes: {A: B}}\n",
                encoding="utf-8",
            )
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"round {n}")
            git(work, "push", "-q", "-f", "origin", "HEAD:refs/heads/feature")
            sha = git(work, "rev-parse", "HEAD")
            body = json.dumps(pr_payload(1, sha, "opened" if n == 0 else "synchronize")).encode()
            t0 = time.perf_counter()
            answer = http.post(
                f"{base}/webhooks/github",
                data=body,
                timeout=10,
                headers={
                    "X-GitHub-Event": "pull_request",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": sign(SECRET, body),
                    "Content-Type": "application/json",
                },
            )
            assert answer.status_code == 202, answer.text
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                comments = forge.comments("github", REPO, 1)
                if comments and sha in comments[0].body:
                    break
                time.sleep(0.005)
            else:
                raise SystemExit(f"no comment for {sha} within 60 s")
            timings.append(time.perf_counter() - t0)
    print(
        f"PR webhook -> plan comment on the forge, {rounds} rounds: "
        f"median {statistics.median(timings) * 1000:.0f} ms, "
        f"max {max(timings) * 1000:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--pr-rounds", type=int, default=5)
    args = parser.parse_args()
    # 50 clients on 16 server threads queue by design; waitress would warn on every request
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    os.environ["BENCH_BMC_PASSWORD"] = "bench-password"
    os.environ["BENCH_WEBHOOK_SECRET"] = SECRET
    with tempfile.TemporaryDirectory(prefix="metalform-bench-") as tmp, FakeForge() as forge:
        root = Path(tmp)
        bare, work = make_repository(root, args.servers)
        os.environ["BENCH_GITHUB_TOKEN"] = forge.github_token
        config = config_from_mapping(
            {
                "listen": "127.0.0.1:0",
                "database": f"sqlite:///{root / 'metalform.db'}",
                "dataDir": str(root / "data"),
                "repository": {"url": str(bare), "branch": "main"},
                "pollInterval": 0,
                "driftInterval": 0,
                "tokens": [
                    {
                        "name": "bench",
                        "role": "viewer",
                        "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                    }
                ],
                "github": {
                    "webhookSecret": {"fromEnv": "BENCH_WEBHOOK_SECRET"},
                    "apiUrl": forge.github_url,
                    "token": {"fromEnv": "BENCH_GITHUB_TOKEN"},
                },
            },
            base_dir=root,
            environ={},
        )
        factory = memory_factory(make_fleet(args.servers))
        server = Server(config, Engine(factories={"redfish": factory, "ipmi": factory}))
        base = server.listen()
        thread = threading.Thread(target=server.run, name="bench-server", daemon=True)
        thread.start()
        try:
            service = server.app.service
            service.request_plan()  # a plan of main, so the status has something to count
            service.workers.wait_idle(60)
            load_status(base, args.clients, args.seconds)
            webhook_to_comment(base, work, forge, args.pr_rounds)
        finally:
            server.stop()
            thread.join(timeout=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
