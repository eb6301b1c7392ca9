"""Import benchmark: `metalform import redfish` vs `metalform plan` of the same BMCs.

    python bench/import_bench.py [--systems 200] [--rounds 3] [--per-endpoint 4]
    python bench/import_bench.py --farm MODULE:FACTORY      # another set of BMCs
    python bench/import_bench.py --farm import_bench:farm_bmcs --systems 1000   # the fleet farm

The issue's target: an import takes no more than 2x the time of a plan of the same BMCs.
By default the BMCs are one lab sushy-emulator serving --systems systems on 127.0.0.1 (one
address, many systems). `--farm` plugs in any other set: FACTORY(systems) is a context
manager yielding a `Farm` (the RANGE to import, the port, the scheme and the login), e.g. a
farm of 1,000 BMCs on 1,000 loopback addresses. Each round imports into a fresh repository
(probe + read + write), then plans that repository (load + gather + diff); prints the best of
--rounds for each and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import secrets
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metalform.importer.bmc import Probe
from metalform.importer.run import ImportOptions, run_import
from metalform.lab.farm.runner import FarmProcess
from metalform.lab.farm.server import FarmConfig
from metalform.lab.redfish import LabSystem, RedfishPeer
from reconciler.engine import Engine, Settings

PASSWORD_ENV = "IMPORT_BENCH_PASSWORD"


@dataclass(frozen=True)
class Farm:
    range: str
    port: int
    scheme: str
    username: str
    password: str
    insecure: bool = False


FarmFactory = Callable[[int], contextlib.AbstractContextManager[Farm]]


@contextlib.contextmanager
def emulator_farm(systems: int) -> Iterator[Farm]:
    """One sushy-emulator with `systems` systems, two BIOS profiles, half of them on."""
    lab = [
        LabSystem(
            f"node-{i:04d}",
            manufacturer="Metalform Lab",
            model="Bench A" if i % 2 else "Bench B",
            power_state="On" if i % 2 else "Off",
            bios={"NumaNodesPerSocket": 1 + i % 2, "ProcTurboMode": "Enabled"},
        )
        for i in range(systems)
    ]
    with tempfile.TemporaryDirectory(prefix="import-bench-") as state:
        peer = RedfishPeer(state, lab, username="bench", password="bench-Pa55", power_delay=0)
        peer.start()
        try:
            port = int(peer.url.rsplit(":", 1)[1])
            yield Farm("127.0.0.1", port, "http", "bench", "bench-Pa55")
        finally:
            peer.stop()


@contextlib.contextmanager
def farm_bmcs(systems: int) -> Iterator[Farm]:
    """`systems` TLS BMCs of the fleet farm, one loopback address each, all on one port (as a
    datacenter's BMCs answer on 443), 100 ms per request, 2 at once per BMC."""
    with socket.socket() as probe:  # a port free on the loopback range
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    password = secrets.token_urlsafe(12)
    farm = FarmProcess(FarmConfig(count=systems, port=port, password=password)).start()
    try:
        first = farm.urls[0].split("//")[1].rsplit(":", 1)[0]
        last = farm.urls[-1].split("//")[1].rsplit(":", 1)[0]
        yield Farm(f"{first}-{last}", port, "https", "root", password, insecure=True)
    finally:
        farm.stop()


def load_factory(spec: str | None) -> FarmFactory:
    if not spec:
        return emulator_farm
    module, _, name = spec.partition(":")
    factory: FarmFactory = getattr(importlib.import_module(module), name)
    return factory


def new_repo(farm: Farm) -> Path:
    root = Path(tempfile.mkdtemp(prefix="import-bench-repo-"))
    (root / "credentials.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: bmc}\n"
        f"spec: {{username: {farm.username}, password: {{fromEnv: {PASSWORD_ENV}}}}}\n",
        encoding="utf-8",
    )
    return root


def one_round(farm: Farm, parallelism: int, per_endpoint: int) -> tuple[float, float, int]:
    repo = new_repo(farm)
    options = ImportOptions(
        source="redfish",
        range=farm.range,
        credential="bmc",
        directory=repo,
        parallelism=parallelism,
        per_endpoint=per_endpoint,
        probe=Probe(credential="bmc", scheme=farm.scheme, port=farm.port, insecure=farm.insecure),
    )
    started = time.perf_counter()
    result = run_import(options)
    imported = time.perf_counter() - started
    engine = Engine(Settings(parallelism=parallelism, per_endpoint=per_endpoint))
    started = time.perf_counter()
    run = engine.plan(repo)
    planned = time.perf_counter() - started
    if run.plan.has_changes or run.plan.has_errors:
        raise SystemExit(f"the plan of the imported state is not empty ({repo})")
    return imported, planned, len(result.found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=64)
    parser.add_argument("--per-endpoint", type=int, default=4)
    parser.add_argument("--farm", metavar="MODULE:FACTORY", help="another set of BMCs")
    args = parser.parse_args()
    with load_factory(args.farm)(args.systems) as farm:
        os.environ[PASSWORD_ENV] = farm.password
        rounds = [one_round(farm, args.parallelism, args.per_endpoint) for _ in range(args.rounds)]
    imported = min(r[0] for r in rounds)
    planned = min(r[1] for r in rounds)
    print(f"systems imported: {rounds[0][2]} (range {farm.range}, port {farm.port})")
    print(f"import  best of {args.rounds}: {imported:.2f}s")
    print(f"plan    best of {args.rounds}: {planned:.2f}s")
    print(f"import / plan: {imported / planned:.2f}x (target: at most 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
