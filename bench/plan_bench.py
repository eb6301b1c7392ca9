"""Plan benchmark against a real sushy-emulator: Metalform's plan vs a plain sushy loop.

    python bench/plan_bench.py [--systems 200] [--concurrency 4] [--rounds 3] [--large]

Starts one emulator serving N systems (N = 200, or 1,000 with --large) on loopback, writes a
desired-state repository declaring power and six BIOS attributes for each, then times:
  floor      the same reads done by a plain concurrent sushy loop (System, Bios, Bios/Settings
             per system, the attribute registry once), with C threads;
  metalform  `Engine.plan` (load + gather + diff + order), with at most C requests in flight.
Both use one emulator process and the same concurrency. Prints the best of --rounds for each
and their ratio; also the CPU-only plan of 10,000 servers (bench/cpu_plan.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sushy

from metalform.lab.farm.repo import ATTRIBUTES
from metalform.lab.redfish import LabSystem, RedfishPeer
from reconciler.engine import Engine, Settings


def write_repo(root: Path, url: str, systems: list[LabSystem]) -> None:
    attributes = ", ".join(f"{k}: {v}" for k, v in ATTRIBUTES.items())
    docs = [
        f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: admin, password: {{fromEnv: BENCH_BMC_PASSWORD}}}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {{name: bench}}
spec:
  attributes: {{{attributes}}}
"""
    ]
    for s in systems:
        docs.append(f"""apiVersion: metalform/v1
kind: Server
metadata: {{name: {s.identity}}}
spec:
  bmc: {{driver: redfish, address: "{url}", systemId: {s.identity}, credential: bmc}}
  power: On
  bios: {{template: bench}}
""")
    (root / "fleet.yaml").write_text("---\n".join(docs))


def floor(url: str, password: str, identities: list[str], concurrency: int) -> float:
    """The same reads, the plain way: one sushy root, C threads, no planning."""
    started = time.perf_counter()
    root = sushy.Sushy(url, username="admin", password=password, verify=False)

    def read(identity: str) -> None:
        system = root.get_system(f"/redfish/v1/Systems/{identity}")
        bios = system.bios
        _ = (system.power_state, system.boot, bios.attributes, bios.pending_attributes)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        first = root.get_system(f"/redfish/v1/Systems/{identities[0]}")
        registry = first.bios.get_attribute_registry()
        assert registry is not None
        list(pool.map(read, identities))
    return time.perf_counter() - started


def metalform(repo: Path, concurrency: int) -> tuple[float, int]:
    engine = Engine(Settings(parallelism=max(16, concurrency), per_endpoint=concurrency))
    started = time.perf_counter()
    run = engine.plan(repo)
    seconds = time.perf_counter() - started
    assert run.plan.summary.unreachable == 0, run.plan.diagnostics[:3]
    return seconds, len(run.plan.actions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", type=int, default=200)
    parser.add_argument("--large", action="store_true", help="1,000 systems")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    count = 1000 if args.large else args.systems
    password = "bench-" + os.urandom(6).hex()
    os.environ["BENCH_BMC_PASSWORD"] = password
    systems = [
        LabSystem(
            identity=f"bench-{i:04d}", manufacturer="Metalform Lab", model="MF-G8", power_state="On"
        )
        for i in range(count)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        peer = RedfishPeer(Path(tmp) / "bmc", systems, password=password, power_delay=0.0)
        peer.start()
        try:
            repo = Path(tmp) / "repo"
            repo.mkdir()
            write_repo(repo, peer.url, systems)
            identities = [s.identity for s in systems]
            floor(peer.url, password, identities[:10], args.concurrency)  # warm the emulator
            floors, plans = [], []
            actions = 0
            for _ in range(args.rounds):
                floors.append(floor(peer.url, password, identities, args.concurrency))
                seconds, actions = metalform(repo, args.concurrency)
                plans.append(seconds)
        finally:
            peer.stop()
    best_floor, best_plan = min(floors), min(plans)
    print(f"systems: {count}  concurrency: {args.concurrency}  rounds: {args.rounds}")
    print(
        f"floor (plain sushy reads): best {best_floor:.2f} s  "
        f"median {statistics.median(floors):.2f} s"
    )
    print(
        f"metalform plan:            best {best_plan:.2f} s  "
        f"median {statistics.median(plans):.2f} s  ({actions} actions)"
    )
    print(f"ratio plan/floor:          {best_plan / best_floor:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
