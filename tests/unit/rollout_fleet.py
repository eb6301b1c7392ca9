"""A small rack-labelled fleet for rollout tests: 2 racks of 10 servers, 20% of a rack at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine

RACKS, PER_RACK = 2, 10
HEAD = """apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BMC_PASSWORD}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {name: tuned}
spec:
  attributes: {ProcTurboMode: Disabled}
---
apiVersion: metalform/v1
kind: Policy
metadata: {name: rollout}
spec:
  maxDisruptedPerGroup: {groupBy: rack, max: 20%}
  rollout: {maxFailures: 1}
"""
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: {name}, labels: {{rack: {rack}}}}}
spec:
  bmc: {{driver: redfish, address: "http://10.0.0.{i}", credential: bmc}}
  power: On
  bios: {{template: tuned}}
"""


def name(i: int) -> str:
    return f"n{i:02d}"


def write_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    servers = "".join(
        SERVER.format(name=name(i), rack=f"r{i // PER_RACK}", i=i + 1)
        for i in range(RACKS * PER_RACK)
    )
    (tmp_path / "inventory.yaml").write_text(HEAD + servers)
    return tmp_path


def fleet() -> MemoryFleet:
    state = {"power": "On", "bios.attributes.ProcTurboMode": "Enabled"}
    f = MemoryFleet({f"Server/{name(i)}": {"state": state} for i in range(RACKS * PER_RACK)})
    f.latency = {"bios.set": 0.01, "power.reset": 0.03}
    return f


def engine_for(f: MemoryFleet) -> Engine:
    return Engine(factories={"redfish": memory_factory(f)})
