"""Fleet benchmark: plan N TLS BMCs of a BMC farm, each on its own loopback address.

    python bench/fleet_bench.py [--bmcs 1000] [--latency 0.1] [--limit 2] [--threads 16]
                                [--best-parallelism 512] [--profile 300]

Starts the farm (`metalform.lab.farm`) in a process of its own, writes a desired state of one
Server per BMC (power and six BIOS attributes), then prints side by side:
  floor         one BMC's read chain (System, Bios, Bios settings over a new TLS connection):
                the time the whole fleet would take if every BMC were read at once;
  defaults      `Engine.plan` with the default settings and an empty registry cache;
  cached        the same again: attribute registries now come from the on-disk cache;
  best flags    with --best-parallelism (registries cached);
  sushy         a plain 16-thread sushy client doing the same reads (System, BIOS, pending).
with the wall time, this process's CPU time, the GETs per BMC the farm counted and the peak of
requests one BMC had open at once. RSS is this process's peak (the farm's is separate).
`--profile N` prints instead where the CPU of N BMC reads goes (cProfile, reads in one thread).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import sushy
import urllib3

from metalform.lab.farm import SYSTEM_ID, FarmConfig, FarmProcess
from metalform.lab.farm.repo import farm_server, write_fleet_repo
from reconciler.concurrency import DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT
from reconciler.engine import Engine, Settings

USERNAME = "root"
PASSWORD_ENV = "FLEET_BENCH_BMC_PASSWORD"
SYSTEM = f"/redfish/v1/Systems/{SYSTEM_ID}"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Row:
    def __init__(self, who: str, seconds: float, cpu: float, gets: float, peak: int, note: str):
        self.who, self.seconds, self.cpu, self.gets, self.peak, self.note = (
            who,
            seconds,
            cpu,
            gets,
            peak,
            note,
        )


def measure(farm: FarmProcess, who: str, fn: Callable[[], str]) -> Row:
    farm.reset_stats()
    started, cpu = time.perf_counter(), time.process_time()
    note = fn()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = farm.stats()
    touched = [s for s in stats if s["requests"]]
    gets = sum(s["requests"] for s in touched) / max(1, len(touched))
    return Row(who, seconds, cpu, gets, max((s["peak"] for s in stats), default=0), note)


def plan(repo: Path, parallelism: int, per_endpoint: int) -> Callable[[], str]:
    def run() -> str:
        result = Engine(Settings(parallelism=parallelism, per_endpoint=per_endpoint)).plan(repo)
        summary = result.plan.summary
        cached = sum(1 for d in result.plan.diagnostics if "on-disk cache" in d.message)
        return (
            f"{len(result.plan.actions)} actions, {summary.unreachable} unreachable, "
            f"{cached} registries from cache, RSS {rss_mb():.0f} MB"
        )

    return run


def sushy_client(urls: list[str], password: str, threads: int) -> Callable[[], str]:
    def read(url: str) -> None:
        root = sushy.Sushy(url + "/redfish/v1/", username=USERNAME, password=password, verify=False)
        system = root.get_system(SYSTEM)
        bios = system.bios
        _ = (system.power_state, system.boot, bios.attributes, bios.pending_attributes)

    def run() -> str:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(read, urls))
        return f"{threads} threads"

    return run


def floor(url: str, password: str) -> Callable[[], str]:
    def run() -> str:
        with requests.Session() as session:
            session.auth = (USERNAME, password)
            system = session.get(url + SYSTEM, verify=False).json()
            bios = session.get(url + system["Bios"]["@odata.id"], verify=False).json()
            settings = bios["@Redfish.Settings"]["SettingsObject"]["@odata.id"]
            session.get(url + settings, verify=False).json()
        return "System, Bios, Bios settings"

    return run


def profile(farm: FarmProcess, password: str, count: int) -> None:
    from providers.redfish import RedfishProvider
    from reconciler.concurrency import Limiter
    from reconciler.provider import ProviderContext
    from reconciler.secrets import ResolvedCredential, Secret

    credential = ResolvedCredential(name="bmc", username=USERNAME, secret=Secret(password))
    context = ProviderContext(limiter=Limiter(), credential=lambda name: credential)
    servers = [farm_server(f"n{i}", url) for i, url in enumerate(farm.urls[:count])]
    provider = RedfishProvider(context)
    provider.read_one(servers[0])  # the registry, once
    profiler = cProfile.Profile()
    cpu = time.process_time()
    profiler.enable()
    for server in servers:
        provider.read_one(server)
    profiler.disable()
    cpu = time.process_time() - cpu
    provider.close()
    print(f"CPU per BMC read: {1000 * cpu / count:.2f} ms ({count} BMCs, one thread, cProfile on)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bmcs", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--limit", type=int, default=2, help="requests a BMC serves at once")
    parser.add_argument("--threads", type=int, default=16, help="threads of the sushy client")
    parser.add_argument("--best-parallelism", type=int, default=512)
    parser.add_argument("--no-sushy", action="store_true", help="skip the plain sushy client")
    parser.add_argument("--profile", type=int, metavar="N", help="profile N BMC reads instead")
    args = parser.parse_args()
    urllib3.disable_warnings()
    password = "bench-" + os.urandom(6).hex()
    os.environ[PASSWORD_ENV] = password
    config = FarmConfig(
        count=args.bmcs,
        latency=args.latency,
        limit=args.limit,
        username=USERNAME,
        password=password,
    )
    farm = FarmProcess(config).start()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["METALFORM_CACHE_DIR"] = str(Path(tmp) / "cache")  # starts empty
            if args.profile:
                profile(farm, password, args.profile)
                return 0
            repo = Path(tmp) / "repo"
            write_fleet_repo(repo, farm.urls, USERNAME, f"{{fromEnv: {PASSWORD_ENV}}}")
            print(
                f"{args.bmcs} TLS BMCs, {1000 * args.latency:.0f} ms/request, "
                f"{args.limit} at once per BMC; {os.cpu_count()} CPUs",
                flush=True,
            )
            rows.append(
                measure(farm, "one BMC's read chain (floor)", floor(farm.urls[0], password))
            )
            defaults = plan(repo, DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT)
            rows.append(measure(farm, "metalform plan, defaults", defaults))
            rows.append(measure(farm, "metalform plan, defaults, cached", defaults))
            best = plan(repo, args.best_parallelism, args.limit)
            rows.append(
                measure(
                    farm,
                    f"metalform plan --parallelism {args.best_parallelism} "
                    f"--per-endpoint {args.limit}",
                    best,
                )
            )
            if not args.no_sushy:
                rows.append(
                    measure(
                        farm,
                        f"plain sushy client, {args.threads} threads",
                        sushy_client(farm.urls, password, args.threads),
                    )
                )
    finally:
        farm.stop()
    print(f"{'who':<52} {'wall s':>8} {'CPU s':>7} {'GETs/BMC':>9} {'peak':>5}  note")
    for row in rows:
        print(
            f"{row.who:<52} {row.seconds:>8.2f} {row.cpu:>7.2f} {row.gets:>9.2f} "
            f"{row.peak:>5}  {row.note}"
        )
    print(f"peak RSS of this process: {rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
