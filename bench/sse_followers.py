"""Event-stream followers against `metalform serve`: does `/healthz` stay fast?

    python bench/sse_followers.py [--followers 500] [--probes 300] [--events 20]

A real server process (in-memory fleet, SQLite) runs an apply that stays running. `/healthz`
is timed `--probes` times (a new connection each, like a liveness probe) with no follower,
then again with `--followers` SSE followers of that apply open while `--events` events are
appended to it (each reaches every follower). Prints latency p50/p95/p99 and the server's
RSS and thread count for both. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metalform.store import Store
from tests.server.harness import TOKENS, GitRemote, wait_for
from tests.server.serving import (
    Followers,
    ServeProcess,
    healthz_latencies,
    percentile,
    write_config,
)


def running_apply(server: ServeProcess, fleet: Path) -> str:
    plan = server.plan()
    started = server.post(f"/api/v1/plans/{plan['id']}/apply")
    assert started.status_code == 202, started.text
    wait_for(fleet.with_suffix(".blocked").exists, 30, "the apply to block")
    return str(started.json()["applyId"])


def report(label: str, latencies: list[float], process: psutil.Process) -> None:
    ms = [v * 1000 for v in latencies]
    rss = process.memory_info().rss / 2**20
    print(
        f"{label:>16}: /healthz p50 {percentile(ms, 50):6.1f} ms  p95 "
        f"{percentile(ms, 95):6.1f} ms  p99 {percentile(ms, 99):6.1f} ms  max "
        f"{max(ms):6.1f} ms | server RSS {rss:6.1f} MiB, {process.num_threads()} threads"
    )


def append_events(database: str, apply_id: str, count: int, stop: threading.Event) -> None:
    with Store.open(database) as store:
        for n in range(count):
            if stop.wait(0.1):
                return
            store.append_event("action.updated", apply_id=apply_id, payload={"n": n})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--followers", type=int, default=500)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        remote = GitRemote(root)
        config = write_config(
            root / "server.yaml",
            remote.url,
            f"eventStreams: {{max: {max(args.followers, 1000)}, "
            f"perClient: {max(args.followers, 1000)}}}",
        )
        fleet = root / "fleet.json"
        with ServeProcess.memory(config, fleet, block_at=1) as server:
            process = psutil.Process(server.pid)
            apply_id = running_apply(server, fleet)
            report("no followers", healthz_latencies(server.base, args.probes), process)
            followers = Followers(
                server.base, f"/api/v1/applies/{apply_id}/events", TOKENS["viewer"]
            )
            started = time.monotonic()
            followers.open(args.followers)
            wait_for(lambda: followers.streaming() == args.followers, 120, "the followers")
            print(f"{args.followers} followers streaming after {time.monotonic() - started:.1f} s")
            stop = threading.Event()
            writer = threading.Thread(
                target=append_events,
                daemon=True,
                args=(f"sqlite:///{root / 'state' / 'metalform.db'}", apply_id, args.events, stop),
            )
            writer.start()
            latencies = healthz_latencies(server.base, args.probes)
            stop.set()
            writer.join(30)
            report(f"{args.followers} followers", latencies, process)
            followers.close()
            fleet.with_suffix(".release").touch()
            started = time.monotonic()
            code = server.terminate(60)
            print(
                f"SIGTERM to exit: {time.monotonic() - started:.1f} s, exit status {code}, "
                f"traceback in log: {'Traceback' in server.log()}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
