"""CPU-only plan benchmark: N servers against the in-memory provider (no network).

    python bench/cpu_plan.py [--servers 10000]

Prints the time of each stage (load, gather, plan, render), the total, and the peak resident
memory (RSS) of the process. For RSS as the fleet grows, run it at 1,000 and 10,000 servers:
each run is its own process, so each peak is its own.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine
from reconciler.load import load
from reconciler.render import render_json, render_text

HEADER = """apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BENCH_BMC_PASSWORD}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: base}
spec:
  attributes: {ProcVirtualization: Enabled, SysProfile: PerfOptimized, BootMode: Uefi}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: gpu}
spec:
  extends: base
  attributes: {ProcTurboMode: Disabled, PcieAspm: Disabled}
"""

SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata:
  name: node-{i:05d}
  labels: {{site: yul1, rack: r{rack:03d}, pool: {pool}}}
spec:
  bmc:
    driver: redfish
    address: http://10.{a}.{b}.{c}
    credential: bmc
  power: On
  bios:
    template: gpu
"""


def write_repo(root: Path, servers: int, per_file: int = 100) -> None:
    (root / "common.yaml").write_text(HEADER)
    for start in range(0, servers, per_file):
        chunk = []
        for i in range(start, min(servers, start + per_file)):
            chunk.append(
                SERVER.format(
                    i=i,
                    rack=i // 40,
                    pool="spot" if i % 2 else "ondemand",
                    a=i // 65536,
                    b=(i // 256) % 256,
                    c=i % 256,
                )
            )
        (root / f"servers-{start // per_file:04d}.yaml").write_text("".join(chunk))


def fleet_for(servers: int) -> MemoryFleet:
    systems = {}
    for i in range(servers):
        state = {
            "power": "On",
            "bios.attributes.ProcVirtualization": "Enabled",
            "bios.attributes.SysProfile": "PerfOptimized",
            "bios.attributes.BootMode": "Uefi",
            "bios.attributes.ProcTurboMode": "Disabled",
            "bios.attributes.PcieAspm": "Disabled",
        }
        if i % 10 == 0:  # one in ten has drifted
            state["bios.attributes.ProcTurboMode"] = "Enabled"
        systems[f"Server/node-{i:05d}"] = {"state": state}
    return MemoryFleet(systems)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="report the best of N plans")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_BMC_PASSWORD", "bench-only")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_repo(root, args.servers)
        fleet = fleet_for(args.servers)
        factory = memory_factory(fleet)
        engine = Engine(factories={"redfish": factory})
        t0 = time.perf_counter()
        load(root)
        t_load = time.perf_counter() - t0
        timings = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            run = engine.plan(root)
            timings.append(time.perf_counter() - t0)
        t_plan = min(timings)
        t0 = time.perf_counter()
        render_text(run.plan)
        render_json(run.plan)
        t_render = time.perf_counter() - t0
    print(f"servers: {args.servers}")
    print(f"load only:            {t_load:6.2f} s")
    print(
        f"plan (load+gather+diff+order): best {t_plan:.2f} s of "
        f"{', '.join(f'{t:.2f}' for t in timings)}  (gather {run.gathered.seconds:.2f} s)"
    )
    print(f"render text+json:     {t_render:6.2f} s")
    print(
        f"actions: {len(run.plan.actions)}  changes: {run.plan.summary.update} updated, "
        f"{run.plan.summary.noop} unchanged"
    )
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(f"peak RSS:             {peak_kib / 1024:6.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
