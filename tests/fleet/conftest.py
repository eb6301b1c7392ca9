"""Fixtures: a BMC farm of 50 TLS BMCs on loopback, one per pytest-xdist worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.lab.farm import DEFAULT_MODELS, SYSTEM_ID, FarmConfig, FarmThread
from reconciler.engine import Engine, Settings

FLEET = 50
USERNAME = "farm-admin"
PASSWORD = "farm-Pa55word-not-for-logs"
PASSWORD_ENV = "FLEET_TEST_BMC_PASSWORD"
LATENCY = 0.05


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmThread]:
    running = FarmThread(
        FarmConfig(count=FLEET, latency=LATENCY, limit=2, username=USERNAME, password=PASSWORD)
    ).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fleet(farm: FarmThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FarmThread:
    """The farm with its counters at zero and no faults; an empty registry cache."""
    farm.reset_stats()
    for index in range(FLEET):
        farm.set_fault(index, None)
    monkeypatch.setenv("METALFORM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return farm


def write_repo(root: Path, urls: list[str]) -> Path:
    """A repository declaring one Server per URL (repeat a URL for several on one BMC)."""
    docs = [
        f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: {USERNAME}, password: {{fromEnv: {PASSWORD_ENV}}}}}
---
apiVersion: metalform/v1
kind: BiosTemplate
metadata: {{name: fleet}}
spec:
  attributes: {{ProcTurboMode: Disabled, NumaNodesPerSocket: 2}}
"""
    ]
    for i, url in enumerate(urls):
        docs.append(f"""apiVersion: metalform/v1
kind: Server
metadata: {{name: node-{i:03d}}}
spec:
  bmc:
    {{driver: redfish, address: "{url}", systemId: {SYSTEM_ID}, credential: bmc, verifyTls: false}}
  power: On
  bios: {{template: fleet}}
""")
    root.mkdir(parents=True, exist_ok=True)
    (root / "fleet.yaml").write_text("---\n".join(docs))
    return root


def engine(**settings: float) -> Engine:
    return Engine(Settings(**settings))  # type: ignore[arg-type]


MODELS = len(DEFAULT_MODELS)
