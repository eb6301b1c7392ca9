"""Sites benchmark: what dispatching reads to site workers through Celery/Redis costs.

    python bench/sites_bench.py [--sites 2] [--bmcs 1000] [--workers 1] [--rounds 3]

Starts a redis-server on loopback and, per site, --workers `metalform worker` processes whose
BMCs are an in-memory fleet (the same systems the single-process baseline reads). Then:
  single    `Engine.plan` of every site's servers in one process (the baseline);
  sites     the same plan with each site's reads sent to its workers (`SiteRouter`);
  overhead  CPU of every process (central + workers) per BMC, minus the baseline's;
  round     the round trip of one read task of one BMC (sent, run, answered), median.
The BMC emulation is a factory (`--fleet memory`); the fleet farm plugs in as another one
(`FLEETS`), its BMC addresses in the generated repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis

from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine, Settings

TASK_KEY = "sites-bench-task-key"
ATTRS = {"ProcTurboMode": "Disabled", "BootMode": "Uefi", "SysProfile": "PerfOptimized"}


def server_doc(site: str, i: int) -> str:
    attrs = ", ".join(f"{k}: {v}" for k, v in ATTRS.items())
    return f"""---
apiVersion: metalform/v1
kind: Server
metadata:
  name: {site}-{i:05d}
  labels: {{site: {site}}}
spec:
  bmc: {{driver: redfish, address: "http://10.{site[1:]}.{i // 256}.{i % 256}", credential: bmc}}
  power: On
  bios: {{attributes: {{{attrs}}}}}
"""


def write_repo(root: Path, sites: list[str], bmcs: int) -> None:
    (root / "common.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: bmc}\n"
        "spec: {username: admin, password: {fromEnv: BENCH_BMC_PASSWORD}}\n"
    )
    for site in sites:
        (root / f"{site}.yaml").write_text("".join(server_doc(site, i) for i in range(bmcs)))


def memory_fleet(sites: list[str], bmcs: int) -> MemoryFleet:
    systems: dict[str, Any] = {}
    for site in sites:
        for i in range(bmcs):
            state = {"power": "On", **{f"bios.attributes.{k}": v for k, v in ATTRS.items()}}
            if i % 10 == 0:  # one in ten drifted: the plan has actions
                state["bios.attributes.ProcTurboMode"] = "Enabled"
            systems[f"Server/{site}-{i:05d}"] = {"state": state}
    return MemoryFleet(systems)


FLEETS: dict[str, Callable[[list[str], int], MemoryFleet]] = {"memory": memory_fleet}
"""BMC emulations by name: each gives the live systems of `sites` x `bmcs` servers."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_worker(url: str, site: str, sites: list[str], bmcs: int, fleet: str, latency: float) -> int:
    """A worker process of the benchmark: `metalform worker`, its BMCs emulated."""
    from metalform.sites.config import from_values
    from metalform.sites.worker import run_worker as serve

    config = from_values(url)
    assert config is not None
    emulated = FLEETS[fleet](sites, bmcs)
    emulated.latency["read"] = latency
    factory = memory_factory(emulated)
    return serve(config, site, concurrency=4, loglevel="WARNING", factories={"redfish": factory})


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian package redis-server)")
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            if redis.Redis.from_url(url).ping():
                return process, url
        except redis.RedisError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def best(rounds: int, work: Callable[[], Any], pids: list[int]) -> tuple[float, float, float]:
    """(best wall seconds, CPU seconds of `pids` and of the first pid alone in that round)."""
    results = []
    for _ in range(rounds):
        before, mine, t0 = cpu(pids), cpu(pids[:1]), time.perf_counter()
        work()
        results.append((time.perf_counter() - t0, cpu(pids) - before, cpu(pids[:1]) - mine))
    return min(results)


def profile(work: Callable[[], Any]) -> None:
    """The central side's hottest functions during one plan (own time)."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(work)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", type=int, default=2)
    parser.add_argument("--bmcs", type=int, default=1000, help="BMCs per site")
    parser.add_argument("--workers", type=int, default=1, help="worker processes per site")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fleet", choices=sorted(FLEETS), default="memory")
    parser.add_argument("--chunk", type=int, default=None, help="resources per read task")
    parser.add_argument("--profile", action="store_true", help="profile one central plan")
    parser.add_argument(
        "--read-latency",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="one BMC's answer to a read (in-memory BMCs answer at once by default)",
    )
    parser.add_argument("--worker", metavar="SITE", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("METALFORM_TASK_KEY", TASK_KEY)
    os.environ.setdefault("METALFORM_FINGERPRINT_KEY", "sites-bench")
    os.environ.setdefault("BENCH_BMC_PASSWORD", "bench-only")
    sites = [f"s{n}" for n in range(args.sites)]
    if args.worker:
        return run_worker(args.broker, args.worker, sites, args.bmcs, args.fleet, args.read_latency)

    from metalform.sites.config import from_values
    from metalform.sites.dispatch import SiteRouter

    total = args.sites * args.bmcs
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_repo(root, sites, args.bmcs)
        fleet = FLEETS[args.fleet](sites, args.bmcs)
        fleet.latency["read"] = args.read_latency
        local = {"redfish": memory_factory(fleet)}
        settings = Settings()
        single = Engine(settings, factories=local)
        single.plan(root)  # warm up imports and caches
        me = [os.getpid()]
        wall_1, cpu_1, _ = best(args.rounds, lambda: single.plan(root), me)

        redis_process, url = start_redis(root)
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    site,
                    "--broker",
                    url,
                    "--sites",
                    str(args.sites),
                    "--bmcs",
                    str(args.bmcs),
                    "--fleet",
                    args.fleet,
                    "--read-latency",
                    str(args.read_latency),
                ],
                env={**os.environ, "BENCH_BMC_PASSWORD": "bench-only"},
                stdout=subprocess.DEVNULL,  # Celery's banner
            )
            for site in sites
            for _ in range(args.workers)
        ]
        try:
            config = from_values(url)
            assert config is not None
            if args.chunk:
                config = dataclasses.replace(config, chunk=args.chunk)
            router = SiteRouter(config)
            deadline = time.monotonic() + 60
            while len(router.live_sites(fresh=True)) < len(sites):
                if time.monotonic() > deadline:
                    sys.exit("the workers did not start")
                time.sleep(0.2)
            time.sleep(1.0)  # consuming
            os.environ.pop("BENCH_BMC_PASSWORD")  # the central side needs no secret
            remote = Engine(settings, factories=local, route=router)
            plan = remote.plan(root).plan
            assert not plan.has_errors, [d.render() for d in plan.diagnostics][:3]
            everyone = me + [w.pid for w in workers] + [redis_process.pid]
            wall_n, cpu_n, cpu_central = best(args.rounds, lambda: remote.plan(root), everyone)
            if args.profile:
                profile(lambda: remote.plan(root))
            round_trips = round_trip(router, root, sites[0])
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=30)
            redis_process.terminate()
            redis_process.wait(timeout=10)
    print(f"{args.sites} sites x {args.bmcs} BMCs ({args.fleet}, read latency "
          f"{args.read_latency * 1000:.0f} ms), {args.workers} worker(s)/site, "
          f"chunk {router.config.chunk}")  # fmt: skip
    print(f"single-process plan:   {wall_1:6.2f} s wall, {cpu_1 * 1000 / total:6.3f} ms CPU/BMC")
    print(f"{args.sites}-site plan:          {wall_n:6.2f} s wall, "
          f"{cpu_n * 1000 / total:6.3f} ms CPU/BMC (central + workers + redis)")  # fmt: skip
    print(f"  of which central:    {cpu_central * 1000 / total:6.3f} ms CPU/BMC")
    print(f"wall ratio:            {wall_n / wall_1:6.2f}x")
    print(f"overhead per BMC:      {(cpu_n - cpu_1) * 1000 / total:6.3f} ms CPU")
    print(f"read round trip:       {statistics.median(round_trips) * 1000:6.2f} ms median "
          f"(1 BMC, {len(round_trips)} tasks)")  # fmt: skip
    return 0


def round_trip(router: Any, root: Path, site: str) -> list[float]:
    """Sequential one-BMC read tasks: send, run on a worker, answer."""
    from metalform.sites.app import READ_TASK
    from metalform.sites.wire import documents
    from reconciler.load import load

    desired = load(root)
    server = desired.resources[f"Server/{site}-00000"]
    body = {
        "driver": "redfish",
        "batch": [server.address],
        "resources": documents([server, desired.resources["Credential/bmc"]]),
    }
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        answer = router.call(site, READ_TASK, body, 10.0)
        assert "live" in answer, answer
        times.append(time.perf_counter() - t0)
    return times


if __name__ == "__main__":
    sys.exit(main())
