"""Site benchmark: a plan of 1,000 servers with aggregates and services, and where time goes.

    python bench/site_plan.py [--servers 1000] [--services 100] [--rounds 3]

Every kind's planner runs on realistic sizes; the providers are in-memory (each answers
its whole batch at once), so the numbers are Metalform's own CPU cost per stage: loading and
validating YAML, gathering (the provider calls themselves cost ~nothing here), diffing and
ordering, policies, rendering. Network time is measured by bench/plan_bench.py against a real
emulator.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine
from reconciler.load import load
from reconciler.model import Action, Address, LiveResource, Resource
from reconciler.planners import PLANNERS
from reconciler.provider import ProviderContext
from reconciler.render import render_json, render_markdown, render_text

HEADER = """apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BENCH_BMC_PASSWORD}}
---
apiVersion: metalform/v1
kind: Provider
metadata: {name: cloud}
spec: {type: openstack, url: "http://127.0.0.1:1/v2.1"}
---
apiVersion: metalform/v1
kind: Provider
metadata: {name: engine}
spec: {type: docker, url: "unix:///nonexistent/docker.sock"}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: gpu}
spec:
  attributes: {ProcTurboMode: Disabled, NumaNodesPerSocket: 2, SriovGlobalEnable: Enabled}
---
apiVersion: metalform/v1
kind: Aggregate
metadata: {name: gpu-spot}
spec: {provider: cloud, availabilityZone: nova, selector: {matchLabels: {pool: spot}}}
---
apiVersion: metalform/v1
kind: Aggregate
metadata: {name: gpu-ondemand}
spec: {provider: cloud, availabilityZone: nova, selector: {matchLabels: {pool: ondemand}}}
---
apiVersion: metalform/v1
kind: Policy
metadata: {name: guard}
spec:
  maxDisruptedPerGroup: {groupBy: pool, max: 10%}
  maintenanceWindows: [{cron: "0 2 * * SAT", duration: 4h}]
"""

SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: node-{i:04d}, labels: {{pool: {pool}, rack: r{rack:02d}}}}}
spec:
  bmc: {{driver: redfish, address: "http://10.1.{b}.{c}", credential: bmc}}
  power: On
  bios: {{template: gpu}}
"""

SERVICE = """---
apiVersion: metalform/v1
kind: Service
metadata: {{name: svc-{i:03d}}}
spec:
  provider: engine
  image: local/app:{version}
  env: {{SHARD: "{i}"}}
  ports: ["{port}:80/tcp"]
  restartPolicy: unless-stopped
"""


class StaticProvider:
    """Answers reads from a prepared dict: the cost of a provider call is not measured here."""

    name: ClassVar[str] = "static"
    kinds: ClassVar[frozenset[str]] = frozenset()
    operations: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        context: ProviderContext,
        live: Mapping[Address, LiveResource],
        operations: frozenset[str],
    ) -> None:
        self.live = live
        self.operations = operations  # type: ignore[misc]

    def endpoint(self, resource: Resource) -> str:
        return "static"

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        return {
            r.address: self.live.get(r.address, LiveResource(address=r.address, exists=False))
            for r in resources
        }

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        raise NotImplementedError("the benchmark only plans")

    def close(self) -> None:
        return None


def write_repo(root: Path, servers: int, services: int) -> None:
    chunks = [HEADER]
    for i in range(servers):
        chunks.append(
            SERVER.format(
                i=i, pool="spot" if i % 3 else "ondemand", rack=i // 40, b=i // 250, c=i % 250
            )
        )
    for i in range(services):
        chunks.append(SERVICE.format(i=i, version=2 if i % 10 == 0 else 1, port=20000 + i))
    (root / "site.yaml").write_text("".join(chunks))


def live_states(
    root: Path,
) -> tuple[MemoryFleet, dict[Address, LiveResource], dict[Address, LiveResource]]:
    """Live states equal to the desired ones, but for some drift in each kind."""
    desired = load(root)
    fleet: dict[Address, Any] = {}
    for server in desired.of_kind("Server"):
        n = int(server.name.split("-")[1])
        state = {
            "power": "On",
            "bios.attributes.ProcTurboMode": "Disabled",
            "bios.attributes.NumaNodesPerSocket": 2,
            "bios.attributes.SriovGlobalEnable": "Enabled",
        }
        if n % 20 == 0:
            state["bios.attributes.ProcTurboMode"] = "Enabled"  # 5% drifted BIOS
        fleet[server.address] = {"state": state}
    from reconciler.planners.aggregate import HOSTS_PREFIX
    from reconciler.planners.aggregate import desired_state as aggregate_state
    from reconciler.planners.service import desired_state as service_state

    aggregates = {}
    for aggregate in desired.of_kind("Aggregate"):
        state = aggregate_state(aggregate, desired.resources)
        for host in [k for k in state if k.startswith(HOSTS_PREFIX)][-5:]:
            del state[host]  # five hosts of each pool are not in their aggregate yet
        aggregates[aggregate.address] = LiveResource(address=aggregate.address, state=state)
    services = {}
    for service in desired.of_kind("Service"):
        state = service_state(service)
        if service.name.endswith("0"):
            state["image"] = "local/app:1"  # one in ten runs the old image
        services[service.address] = LiveResource(address=service.address, state=state)
    return MemoryFleet(fleet), aggregates, services


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    args = parser.parse_args()
    os.environ.setdefault("BENCH_BMC_PASSWORD", "bench-only")
    os.environ.setdefault("METALFORM_FINGERPRINT_KEY", "bench-only")
    assert {"Aggregate", "Service"} <= set(PLANNERS), "planners of every kind are installed"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_repo(root, args.servers, args.services)
        fleet, aggregates, services = live_states(root)
        factories = {
            "redfish": memory_factory(fleet),
            "openstack": lambda ctx: StaticProvider(
                ctx,
                aggregates,
                frozenset(
                    {
                        "aggregate.create",
                        "aggregate.add_host",
                        "aggregate.remove_host",
                        "aggregate.set_metadata",
                        "aggregate.set_availability_zone",
                    }
                ),
            ),
            "docker": lambda ctx: StaticProvider(
                ctx,
                services,
                frozenset(
                    {
                        "service.create",
                        "service.recreate",
                        "service.start",
                        "service.stop",
                        "service.delete",
                    }
                ),
            ),
        }
        engine = Engine(factories=factories)
        timings: dict[str, list[float]] = {"load": [], "plan": [], "render": []}
        for _ in range(args.rounds):
            t = time.perf_counter()
            load(root)
            timings["load"].append(time.perf_counter() - t)
            t = time.perf_counter()
            run = engine.plan(root)
            timings["plan"].append(time.perf_counter() - t)
            t = time.perf_counter()
            render_text(run.plan)
            render_markdown(run.plan)
            render_json(run.plan)
            timings["render"].append(time.perf_counter() - t)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(engine.plan, root)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    plan = run.plan
    ops: dict[str, int] = {}
    for action in plan.actions:
        ops[action.operation] = ops.get(action.operation, 0) + 1
    best = {k: min(v) for k, v in timings.items()}
    print(
        f"site: {args.servers} servers, 2 aggregates, {args.services} services; "
        f"best of {args.rounds}"
    )
    print(f"load + validate:           {best['load']:.2f} s")
    print(
        f"plan (load, gather, diff, order, policies): {best['plan']:.2f} s "
        f"(gather {run.gathered.seconds:.2f} s)"
    )
    print(
        f"  of which diff/order/policies: "
        f"{best['plan'] - best['load'] - run.gathered.seconds:.2f} s"
    )
    print(f"render text+markdown+json: {best['render']:.2f} s")
    print(
        f"changes: {plan.summary.update} update, {plan.summary.create} create, "
        f"{plan.summary.noop} unchanged; actions by operation: "
        + ", ".join(f"{k} {v}" for k, v in sorted(ops.items()))
        + f"; deferred {plan.summary.deferred}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
