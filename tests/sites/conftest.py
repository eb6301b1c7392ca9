"""Two sites, each with its own lab BMC and its own secret, a redis-server and workers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from metalform.lab.redfish import LabSystem, RedfishPeer
from reconciler.engine import Engine, Settings
from reconciler.model import Plan
from tests.fixtures.redfish import LAB_PASSWORD, LAB_USERNAME
from tests.sites.peers import RedisPeer, WorkerProcess

SITES = ("east", "west")
SECRET_ENV = {"east": "SITE_EAST_BMC_PASSWORD", "west": "SITE_WEST_BMC_PASSWORD"}
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = Settings(timeout=5.0, retries=1, operation_timeout=20.0)


@dataclass
class Sites:
    redis: RedisPeer
    bmcs: dict[str, RedfishPeer]
    tmp: Path

    def worker(self, site: str, *, visibility_timeout: float = 3600.0) -> WorkerProcess:
        worker = WorkerProcess(
            site=site,
            broker=self.redis.url,
            env={SECRET_ENV[site]: LAB_PASSWORD},
            log=self.tmp / f"worker-{site}.log",
            visibility_timeout=visibility_timeout,
            args=("--broker-ca", str(self.redis.ca_file)) if self.redis.tls else (),
        )
        return worker.start(self.redis.client())


def systems(site: str) -> list[LabSystem]:
    return [
        LabSystem(f"{site}-1", power_state="On"),
        LabSystem(f"{site}-2", power_state="Off"),
        LabSystem(f"{site}-3", power_state="On", bios={"ProcTurboMode": "Disabled"}),
    ]


@pytest.fixture(scope="module")
def sites(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Sites]:
    """A redis-server and one lab BMC per site (a missing peer fails, never skips); a test
    module may slow the BMCs' power transitions with POWER_DELAY, and have the broker speak
    only TLS with BROKER_TLS."""
    tmp = tmp_path_factory.mktemp("sites")
    try:
        peer = RedisPeer(tmp / "redis", tls=getattr(request.module, "BROKER_TLS", False)).start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    bmcs: dict[str, RedfishPeer] = {}
    try:
        for site in SITES:
            bmcs[site] = RedfishPeer(
                tmp / f"bmc-{site}",
                systems(site),
                username=LAB_USERNAME,
                password=LAB_PASSWORD,
                power_delay=getattr(request.module, "POWER_DELAY", 0.5),
                die_with_parent=True,
            ).start()
        yield Sites(peer, bmcs, tmp)
    finally:
        for bmc in bmcs.values():
            bmc.stop()
        peer.stop()


def write_repository(directory: Path, sites: Sites, *, extra_site: str | None = None) -> Path:
    """Servers of both sites, each site's Credential read from a variable only its workers
    have; with `extra_site`, one more Server on a site that has no worker."""
    directory.mkdir(parents=True, exist_ok=True)
    docs = []
    for site in SITES:
        docs.append(
            f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc-{site}}}
spec:
  type: basic
  username: {LAB_USERNAME}
  password: {{fromEnv: {SECRET_ENV[site]}}}
"""
        )
        url = sites.bmcs[site].url
        for n, power, bios in ((1, "On", ""), (2, "On", ""), (3, "On", "ProcTurboMode: Enabled")):
            docs.append(
                f"""apiVersion: metalform/v1
kind: Server
metadata:
  name: {site}-{n}
  labels: {{site: {site}}}
spec:
  bmc: {{driver: redfish, address: "{url}", systemId: {site}-{n}, credential: bmc-{site}}}
  power: {power}
  reboot: Allowed
"""
                + (f"  bios:\n    attributes: {{{bios}}}\n" if bios else "")
            )
    if extra_site:
        url = "http://127.0.0.9:9"  # never contacted: only a worker of that site could
        docs.append(
            f"""apiVersion: metalform/v1
kind: Server
metadata:
  name: {extra_site}-1
  labels: {{site: {extra_site}}}
spec:
  bmc: {{driver: redfish, address: "{url}", systemId: {extra_site}-1, credential: bmc-{SITES[0]}}}
  power: On
"""
        )
    (directory / "fleet.yaml").write_text("---\n".join(docs))
    return directory


@pytest.fixture(scope="module")
def workers(sites: Sites) -> Iterator[dict[str, WorkerProcess]]:
    """One `metalform worker` per site on the module's broker."""
    started = {site: sites.worker(site) for site in SITES}
    yield started
    for worker in started.values():
        worker.stop()


def comparable(plan: Plan) -> dict[str, Any]:
    return plan.model_dump(mode="json", exclude={"source"})


def single_process_plan(repo: Path, monkeypatch: pytest.MonkeyPatch) -> Plan:
    """The plan of one process that has every site's secret."""
    with monkeypatch.context() as m:
        for site in SITES:
            m.setenv(SECRET_ENV[site], LAB_PASSWORD)
        return Engine(SETTINGS, clock=lambda: NOW).plan(repo).plan


def baseline(sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Plan]:
    """The two sites' repository and its single-process plan, which has work in it; the
    sites' secrets are then out of this process's environment (only workers have them)."""
    repo = write_repository(tmp_path / "repo", sites)
    for site in SITES:
        monkeypatch.delenv(SECRET_ENV[site], raising=False)
    # The BIOS registry in the shared disk cache first, so that both plans take it from there
    # (and say so) whatever test ran before.
    single_process_plan(repo, monkeypatch)
    local = single_process_plan(repo, monkeypatch)
    assert {a.operation for a in local.actions} >= {"power.on", "bios.set", "power.reset"}
    return repo, local
