"""A fleet BIOS rollout with reboots, in waves, with and without a failure budget.

    python bench/rollout_bench.py [--servers 1000] [--rack 40] [--fail 0.05]

1,000 servers in racks of 40 get a BIOS change that needs a reboot; `maxDisruptedPerGroup:
{groupBy: rack, max: 10%}` lets 4 servers of each rack reboot at once, so the plan takes 10
waves. The in-memory provider stands in for the BMCs, with a latency per action (`bios.set`
0.1 s, `power.reset` 1 s: a reboot scaled down, not a real one). Then `--fail` of the BMCs refuse
the change, and the same rollout runs with no budget and with `rollout: {maxFailures: 1%}`: what
the budget saved is the servers it did not touch after the fleet showed it was going wrong.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus

HEAD = """apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: admin, password: {{fromEnv: BENCH_BMC_PASSWORD}}}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {{name: tuned}}
spec:
  attributes: {{ProcTurboMode: Disabled}}
---
apiVersion: metalform/v1
kind: Policy
metadata: {{name: rollout}}
spec:
  maxDisruptedPerGroup: {{groupBy: rack, max: 10%}}
{budget}"""
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: node-{i:05d}, labels: {{rack: r{rack:03d}}}}}
spec:
  bmc: {{driver: redfish, address: "http://10.{a}.{b}.{c}", credential: bmc}}
  power: On
  bios: {{template: tuned}}
"""


def write_repo(root: Path, servers: int, rack: int, budget: str | None) -> None:
    policy = f"  rollout: {{maxFailures: {budget}}}\n" if budget else ""
    body = "".join(
        SERVER.format(i=i, rack=i // rack, a=i // 65536, b=(i // 256) % 256, c=i % 256)
        for i in range(servers)
    )
    (root / "inventory.yaml").write_text(HEAD.format(budget=policy) + body)


def fleet(servers: int, fail: float, seed: int) -> MemoryFleet:
    state = {"power": "On", "bios.attributes.ProcTurboMode": "Enabled"}
    f = MemoryFleet({f"Server/node-{i:05d}": {"state": state} for i in range(servers)})
    f.latency = {"bios.set": 0.1, "power.reset": 1.0}
    broken = random.Random(seed).sample(sorted(f.systems), int(servers * fail))
    for address in broken:
        f.fail_operations[(address, "bios.set")] = "HTTP 500 from the BMC"
    return f


def rollout(servers: int, rack: int, fail: float, budget: str | None, parallelism: int) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_repo(root, servers, rack, budget)
        f = fleet(servers, fail, seed=7)
        engine = Engine(Settings(parallelism=parallelism), factories={"redfish": memory_factory(f)})
        plan = engine.plan(root).plan
        t0 = time.perf_counter()
        result = engine.apply(plan)
        seconds = time.perf_counter() - t0
    touched = len({address for address, _ in f.calls})
    rebooted = sum(1 for _, op in f.calls if op == "power.reset")
    counts = {s.value: result.count(s) for s in ActionStatus if result.count(s)}
    label = f"budget {budget}" if budget else "no budget"
    return (
        f"  {label:<12} {seconds:6.1f} s, {plan.summary.waves} waves planned; "
        f"{touched} servers touched, {rebooted} rebooted; actions {counts}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--rack", type=int, default=40)
    parser.add_argument("--fail", type=float, default=0.05, help="share of BMCs that fail")
    parser.add_argument("--parallelism", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_BMC_PASSWORD", "bench-only")
    print(
        f"BIOS rollout with reboots: {args.servers} servers, racks of {args.rack}, 10% of a rack "
        f"down at once; bios.set 0.1 s, reboot 1 s (in-memory provider), "
        f"--parallelism {args.parallelism}"
    )
    print(" all BMCs healthy:")
    print(rollout(args.servers, args.rack, 0.0, None, args.parallelism))
    print(f" {args.fail:.0%} of the BMCs fail:")
    for budget in (None, "1%"):
        print(rollout(args.servers, args.rack, args.fail, budget, args.parallelism))
    return 0


if __name__ == "__main__":
    sys.exit(main())
