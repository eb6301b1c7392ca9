"""24 sushy-emulator BMCs, one server each: Metalform's plan vs a plain sushy client.

    python bench/emulator_fleet_bench.py [--bmcs 24] [--parallelism 8] [--rounds 3]

Each BMC is a lab sushy-emulator process of its own (plain HTTP: the lab emulator serves no
TLS; `bench/fleet_bench.py` measures TLS on the BMC farm). Times, best of --rounds:
  sushy      a plain client with P threads: per BMC a sushy root, System, BIOS, pending;
  metalform  `Engine.plan` at parallelism P (load, gather, diff, order), registries cached.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sushy

from metalform.lab.farm.repo import write_fleet_repo
from metalform.lab.redfish import LabSystem, RedfishPeer
from reconciler.engine import Engine, Settings

SYSTEM = "bench-0001"
PASSWORD_ENV = "EMULATOR_BENCH_PASSWORD"


def sushy_client(urls: list[str], password: str, threads: int) -> float:
    def read(url: str) -> None:
        root = sushy.Sushy(url + "/redfish/v1/", username="admin", password=password)
        system = root.get_system(f"/redfish/v1/Systems/{SYSTEM}")
        bios = system.bios
        _ = (system.power_state, system.boot, bios.attributes, bios.pending_attributes)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(read, urls))
    return time.perf_counter() - started


def metalform(repo: Path, parallelism: int) -> float:
    started = time.perf_counter()
    run = Engine(Settings(parallelism=parallelism)).plan(repo)
    seconds = time.perf_counter() - started
    assert run.plan.summary.unreachable == 0, [d.render() for d in run.plan.diagnostics[:3]]
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bmcs", type=int, default=24)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    password = "bench-" + os.urandom(6).hex()
    os.environ[PASSWORD_ENV] = password
    system = LabSystem(
        identity=SYSTEM, manufacturer="Metalform Lab", model="MF-G8", power_state="On"
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["METALFORM_CACHE_DIR"] = str(Path(tmp) / "cache")
        peers = [
            RedfishPeer(Path(tmp) / f"bmc-{i}", [system], password=password, power_delay=0.0)
            for i in range(args.bmcs)
        ]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda peer: peer.start(), peers))
        try:
            urls = [peer.url for peer in peers]
            repo = Path(tmp) / "repo"
            write_fleet_repo(repo, urls, "admin", f"{{fromEnv: {PASSWORD_ENV}}}", SYSTEM)
            metalform(repo, args.parallelism)  # warm the emulators; registries to the cache
            sushy_client(urls, password, args.parallelism)
            plain, plans = [], []
            for _ in range(args.rounds):
                plain.append(sushy_client(urls, password, args.parallelism))
                plans.append(metalform(repo, args.parallelism))
        finally:
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda peer: peer.stop(), peers))
    print(
        f"{args.bmcs} sushy-emulator BMCs (HTTP), parallelism {args.parallelism}, "
        f"best of {args.rounds}"
    )
    print(f"plain sushy client:  {min(plain):.2f} s")
    print(f"metalform plan:      {min(plans):.2f} s")
    print(f"ratio plan/sushy:    {min(plans) / min(plain):.2f}x (target <= 1.0x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
