"""Sites benchmark: what dispatching reads to site workers through Celery/Redis costs.

    python bench/sites_bench.py [--sites 2] [--bmcs 1000] [--workers 1] [--rounds 3]

Starts a redis-server on loopback and, per site, --workers `metalform worker` processes that
read the same BMCs as the single-process baseline: in-memory ones (`--fleet memory`) or the
fleet farm's TLS Redfish BMCs (`--fleet farm`, one farm process, each site its own range of
--bmcs BMCs, 100 ms per request unless --read-latency). Then:
  single    `Engine.plan` of every site's servers in one process (the baseline);
  sites     the same plan with each site's reads sent to its workers (`SiteRouter`);
  overhead  CPU of every process (central + workers) per BMC, minus the baseline's;
  broker    commands and bytes through redis for one plan;
  round     the round trip of one read task of one BMC (sent, run, answered), median.
The emulations are in `FLEETS`; the farm's own CPU (the BMCs' side) is counted nowhere.
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

from metalform.lab.farm import SYSTEM_ID as FARM_SYSTEM_ID
from metalform.lab.farm import FarmConfig, FarmProcess
from metalform.lab.farm.repo import ATTRIBUTES as FARM_ATTRIBUTES
from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine, Settings
from reconciler.provider import ProviderFactory

TASK_KEY = "sites-bench-task-key"
USERNAME = "root"
PASSWORD_ENV = "BENCH_BMC_PASSWORD"
ATTRS = {"ProcTurboMode": "Disabled", "BootMode": "Uefi", "SysProfile": "PerfOptimized"}


class MemoryBmcs:
    """In-memory BMCs (`providers.memory`): one in ten drifted, answers after `latency`."""

    def __init__(self, sites: list[str], bmcs: int, latency: float) -> None:
        systems: dict[str, Any] = {}
        for site in sites:
            for i in range(bmcs):
                state = {"power": "On", **{f"bios.attributes.{k}": v for k, v in ATTRS.items()}}
                if i % 10 == 0:  # one in ten drifted: the plan has actions
                    state["bios.attributes.ProcTurboMode"] = "Enabled"
                systems[f"Server/{site}-{i:05d}"] = {"state": state}
        self.fleet = MemoryFleet(systems)
        self.fleet.latency["read"] = latency
        self.attributes: dict[str, object] = dict(ATTRS)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def bmc(self, site: str, i: int) -> str:
        address = f"http://10.{site[1:]}.{i // 256}.{i % 256}"
        return f'{{driver: redfish, address: "{address}", credential: bmc}}'

    def factories(self) -> dict[str, ProviderFactory] | None:
        return {"redfish": memory_factory(self.fleet)}


class FarmBmcs:
    """The fleet farm (`metalform.lab.farm`, TLS Redfish BMCs each on its own loopback
    address, `latency` per request): one farm process, site k owns BMCs k*bmcs..(k+1)*bmcs-1.
    The reads go through the installed Redfish provider, central and in the workers alike."""

    def __init__(self, sites: list[str], bmcs: int, latency: float) -> None:
        self.sites, self.bmcs, self.latency = sites, bmcs, latency
        self.farm: FarmProcess | None = None
        self.attributes = dict(FARM_ATTRIBUTES)

    def start(self) -> None:
        config = FarmConfig(
            count=len(self.sites) * self.bmcs,
            latency=self.latency,
            username=USERNAME,
            password=os.environ[PASSWORD_ENV],
        )
        self.farm = FarmProcess(config).start()

    def stop(self) -> None:
        if self.farm is not None:
            self.farm.stop()

    def bmc(self, site: str, i: int) -> str:
        assert self.farm is not None, "the farm is started by the central side only"
        url = self.farm.urls[self.sites.index(site) * self.bmcs + i]
        return (
            f'{{driver: redfish, address: "{url}", systemId: {FARM_SYSTEM_ID}, '
            "credential: bmc, verifyTls: false}"
        )

    def factories(self) -> dict[str, ProviderFactory] | None:
        return None  # the installed providers: real TLS Redfish clients


Bmcs = MemoryBmcs | FarmBmcs

FLEETS: dict[str, Callable[[list[str], int, float], Bmcs]] = {
    "memory": MemoryBmcs,
    "farm": FarmBmcs,
}
"""BMC emulations by name, each of `sites` x `bmcs` servers answering a read after `latency`."""


def server_doc(site: str, i: int, bmcs: Bmcs) -> str:
    attrs = ", ".join(f"{k}: {v}" for k, v in bmcs.attributes.items())
    return f"""---
apiVersion: metalform/v1
kind: Server
metadata:
  name: {site}-{i:05d}
  labels: {{site: {site}}}
spec:
  bmc: {bmcs.bmc(site, i)}
  power: On
  bios: {{attributes: {{{attrs}}}}}
"""


def write_repo(root: Path, sites: list[str], count: int, bmcs: Bmcs) -> None:
    (root / "common.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: bmc}\n"
        f"spec: {{username: {USERNAME}, password: {{fromEnv: {PASSWORD_ENV}}}}}\n"
    )
    for site in sites:
        (root / f"{site}.yaml").write_text("".join(server_doc(site, i, bmcs) for i in range(count)))


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
    factories = FLEETS[fleet](sites, bmcs, latency).factories()
    return serve(config, site, concurrency=4, loglevel="WARNING", factories=factories)


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
        default=None,
        metavar="SECONDS",
        help="one BMC's answer to a read (in-memory BMCs answer at once by default); "
        "with --fleet farm, each request's (0.1 s by default)",
    )
    parser.add_argument("--worker", metavar="SITE", help=argparse.SUPPRESS)
    parser.add_argument("--broker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("METALFORM_TASK_KEY", TASK_KEY)
    os.environ.setdefault("METALFORM_FINGERPRINT_KEY", "sites-bench")
    os.environ.setdefault(PASSWORD_ENV, "bench-" + os.urandom(6).hex())
    sites = [f"s{n}" for n in range(args.sites)]
    if args.worker:
        return run_worker(args.broker, args.worker, sites, args.bmcs, args.fleet, args.read_latency)

    if args.read_latency is None:
        args.read_latency = 0.1 if args.fleet == "farm" else 0.0
    total = args.sites * args.bmcs
    bmcs = FLEETS[args.fleet](sites, args.bmcs, args.read_latency)
    bmcs.start()
    try:
        return bench(args, sites, total, bmcs)
    finally:
        bmcs.stop()


def bench(args: argparse.Namespace, sites: list[str], total: int, bmcs: Bmcs) -> int:
    from metalform.sites.config import from_values
    from metalform.sites.dispatch import SiteRouter

    password = os.environ[PASSWORD_ENV]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["METALFORM_CACHE_DIR"] = str(root / "cache")  # registries, shared by workers
        repo = root / "repo"
        repo.mkdir()
        write_repo(repo, sites, args.bmcs, bmcs)
        local = bmcs.factories()
        settings = Settings()
        single = Engine(settings, factories=local)
        single.plan(repo)  # warm up imports and caches
        me = [os.getpid()]
        wall_1, cpu_1, _ = best(args.rounds, lambda: single.plan(repo), me)

        redis_process, url = start_redis(root)
        workers = start_workers(args, sites, url, password)
        try:
            config = from_values(url)
            assert config is not None
            if args.chunk:
                config = dataclasses.replace(config, chunk=args.chunk)
            router = SiteRouter(config)
            wait_for_workers(router, sites)
            os.environ.pop(PASSWORD_ENV)  # the central side needs no secret
            remote = Engine(settings, factories=local, route=router)
            plan = remote.plan(repo).plan
            assert not plan.has_errors, [d.render() for d in plan.diagnostics][:3]
            everyone = me + [w.pid for w in workers] + [redis_process.pid]
            wall_n, cpu_n, cpu_central = best(args.rounds, lambda: remote.plan(repo), everyone)
            traffic = broker_traffic(router.client, lambda: remote.plan(repo))
            if args.profile:
                profile(lambda: remote.plan(repo))
            round_trips = round_trip(router, repo, sites[0])
        finally:
            for w in workers:
                w.terminate()
            for w in workers:
                w.wait(timeout=30)
            redis_process.terminate()
            redis_process.wait(timeout=10)
    report(args, total, router.config.chunk, (wall_1, cpu_1), (wall_n, cpu_n, cpu_central))
    report_broker(total, traffic, round_trips)
    return 0


def start_workers(
    args: argparse.Namespace, sites: list[str], url: str, password: str
) -> list[subprocess.Popen[bytes]]:
    """--workers `metalform worker` processes per site (this script in its --worker role)."""
    common = ["--broker", url, "--sites", str(args.sites), "--bmcs", str(args.bmcs)]
    common += ["--fleet", args.fleet, "--read-latency", str(args.read_latency)]
    return [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", site, *common],
            env={**os.environ, PASSWORD_ENV: password},
            stdout=subprocess.DEVNULL,  # Celery's banner
        )
        for site in sites
        for _ in range(args.workers)
    ]


def wait_for_workers(router: Any, sites: list[str]) -> None:
    deadline = time.monotonic() + 60
    while len(router.live_sites(fresh=True)) < len(sites):
        if time.monotonic() > deadline:
            sys.exit("the workers did not start")
        time.sleep(0.2)
    time.sleep(1.0)  # consuming


def report(
    args: argparse.Namespace,
    total: int,
    chunk: int,
    single: tuple[float, float],
    sites: tuple[float, float, float],
) -> None:
    (wall_1, cpu_1), (wall_n, cpu_n, cpu_central) = single, sites
    print(f"{args.sites} sites x {args.bmcs} BMCs ({args.fleet}, read latency "
          f"{args.read_latency * 1000:.0f} ms), {args.workers} worker(s)/site, "
          f"chunk {chunk}")  # fmt: skip
    print(f"single-process plan:   {wall_1:6.2f} s wall, {cpu_1 * 1000 / total:6.3f} ms CPU/BMC")
    print(f"{args.sites}-site plan:          {wall_n:6.2f} s wall, "
          f"{cpu_n * 1000 / total:6.3f} ms CPU/BMC (central + workers + redis)")  # fmt: skip
    print(f"  of which central:    {cpu_central * 1000 / total:6.3f} ms CPU/BMC")
    print(f"wall ratio:            {wall_n / wall_1:6.2f}x")
    print(f"overhead per BMC:      {(cpu_n - cpu_1) * 1000 / total:6.3f} ms CPU")


def report_broker(total: int, traffic: dict[str, int], round_trips: list[float]) -> None:
    print(f"broker per plan:       {traffic['commands']} commands, "
          f"{traffic['in'] / 1e6:.2f} MB in, {traffic['out'] / 1e6:.2f} MB out "
          f"({(traffic['in'] + traffic['out']) / total / 1000:.2f} KB per BMC)")  # fmt: skip
    print(f"read round trip:       {statistics.median(round_trips) * 1000:6.2f} ms median "
          f"(1 BMC, {len(round_trips)} tasks)")  # fmt: skip


def broker_traffic(client: redis.Redis, work: Callable[[], Any]) -> dict[str, int]:
    """What one plan costs the broker: commands and bytes in and out (redis INFO stats;
    the heartbeats of the workers count too, a few per second)."""

    def stats() -> dict[str, int]:
        info = client.info("stats")
        return {
            "commands": int(info["total_commands_processed"]),
            "in": int(info["total_net_input_bytes"]),
            "out": int(info["total_net_output_bytes"]),
        }

    before = stats()
    work()
    after = stats()
    return {key: after[key] - before[key] for key in before}


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
