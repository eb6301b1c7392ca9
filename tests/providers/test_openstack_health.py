"""novaCompute health checks against a real nova-api: a Server's check passes while a
nova-compute service of its host is up and enabled, and fails, saying why, once the service is
disabled or forced down. The apply opens the openstack provider for the check alone (no
Aggregate in the plan), and the plan carries the openstack Provider it needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from metalform.lab.nova import NovaPeer
from providers.memory import MemoryFleet, memory_factory
from providers.openstack import OpenStackProvider
from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus

pytestmark = [pytest.mark.peer]

HOST = "gpu-host-002"
MICROVERSION = {"OpenStack-API-Version": "compute 2.53"}


def desired(url: str, host: str) -> str:
    return f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: admin, password: {{fromEnv: BMC_PASSWORD}}}}
---
apiVersion: metalform/v1
kind: Provider
metadata: {{name: cloud}}
spec: {{type: openstack, url: "{url}"}}
---
apiVersion: metalform/v1
kind: Server
metadata: {{name: {host}}}
spec:
  bmc: {{driver: redfish, address: "http://10.0.0.2", systemId: {host}, credential: bmc}}
  power: On
  checks: [{{novaCompute: {host}, timeout: 1s}}]
"""


class Services:
    """The lab cloud's compute services, changed through Nova's own API as an operator would."""

    def __init__(self, peer: NovaPeer) -> None:
        self.url = peer.url.rstrip("/")
        self.headers = {**peer.headers(), **MICROVERSION}

    def _id(self, host: str) -> str:
        response = requests.get(
            f"{self.url}/os-services",
            params={"binary": "nova-compute", "host": host},
            headers=self.headers,
            timeout=30,
        )
        response.raise_for_status()
        (service,) = response.json()["services"]
        return str(service["id"])

    def update(self, host: str, **body: Any) -> None:
        response = requests.put(
            f"{self.url}/os-services/{self._id(host)}", json=body, headers=self.headers, timeout=30
        )
        assert response.status_code == 200, response.text

    def set_status(self, host: str, status: str, **reason: str) -> None:
        """Enable or disable the service, which stays up.

        Nova calls an up compute service whose status changes (to sync a placement trait);
        the lab has no nova-compute to answer, so the change is made while it is forced down.
        """
        self.update(host, status=status, forced_down=True, **reason)
        self.update(host, forced_down=False)


@pytest.fixture
def services(nova_peer: NovaPeer) -> Iterator[Services]:
    """The compute services, all up and enabled again after the test."""
    changed = Services(nova_peer)
    try:
        yield changed
    finally:
        changed.set_status(HOST, "enabled")


def apply_checked(
    tmp_path: Path, peer: NovaPeer, monkeypatch: pytest.MonkeyPatch
) -> tuple[ActionStatus, str]:
    """Plan and apply power On of the Server; the status and error of its action."""
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    (tmp_path / "fleet.yaml").write_text(desired(peer.url, HOST))
    fleet = MemoryFleet({f"Server/{HOST}": {"state": {"power": "Off"}}})
    engine = Engine(
        Settings(timeout=10.0, retries=1),
        factories={"redfish": memory_factory(fleet), "openstack": OpenStackProvider},
    )
    plan = engine.plan(tmp_path).plan
    assert [a.operation for a in plan.actions] == ["power.on"]
    assert "Provider/cloud" in plan.resources  # the cloud the check asks travels with the plan
    (result,) = engine.apply(plan).results.values()
    assert fleet.snapshot(f"Server/{HOST}").state["power"] == "On"
    return result.status, result.error or ""


def test_an_up_and_enabled_compute_service_passes(
    tmp_path: Path, nova_peer: NovaPeer, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert apply_checked(tmp_path, nova_peer, monkeypatch) == (ActionStatus.SUCCEEDED, "")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("disable", f"Provider/cloud: nova-compute on {HOST} is up and disabled: fan swap"),
        ("force-down", f"Provider/cloud: nova-compute on {HOST} is down (forced down) and enabled"),
    ],
)
def test_a_disabled_or_down_compute_service_fails_the_server(
    tmp_path: Path,
    nova_peer: NovaPeer,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
    why: str,
) -> None:
    if change == "disable":
        services.set_status(HOST, "disabled", disabled_reason="fan swap")
    else:
        services.update(HOST, forced_down=True)
    status, error = apply_checked(tmp_path, nova_peer, monkeypatch)
    assert status is ActionStatus.FAILED
    assert error.startswith(f"health check failed: novaCompute {HOST}: {why}"), error
    assert error.endswith("(for 1s)")
