"""New hardware in one apply: MAAS deploys it, then it joins its Nova aggregate.

A host Nova does not know yet is planned as an add that waits for the host's MAAS deployment
and then for its nova-compute to register (here: the test registers it in the real nova-api
once the MAAS simulator says Deployed, as nova-compute would on first start). A failed
deployment skips the add.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metalform.lab.maas import DEPLOYED, MaasPeer
from metalform.lab.nova import NovaPeer
from providers.maas import MaasProvider
from providers.memory import MemoryFleet, memory_factory
from providers.openstack import OpenStackProvider
from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus

pytestmark = [pytest.mark.peer]


def doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "metalform/v1",
            "kind": kind,
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
    )


def write_repo(root: Path, maas: MaasPeer, nova: NovaPeer, host: str) -> Path:
    root.mkdir()
    documents = [
        doc(
            "Credential",
            "bmc",
            {"type": "basic", "username": "admin", "password": {"fromEnv": "E2E_BMC_PASSWORD"}},
        ),
        doc("Credential", "maas-key", {"type": "token", "token": {"fromEnv": "E2E_MAAS_KEY"}}),
        doc(
            "Provider",
            "lab-maas",
            {"type": "maas", "url": maas.url, "credential": "maas-key", "timeout": 5},
        ),
        doc("Provider", "cloud", {"type": "openstack", "url": nova.url, "timeout": 30}),
        doc(
            "Server",
            host,
            {
                "bmc": {"driver": "redfish", "address": "http://127.0.0.1:9", "credential": "bmc"},
                "provisioning": {
                    "provider": "lab-maas",
                    "state": "Deployed",
                    "distroSeries": "noble",
                },
            },
            {"pool": "spot"},
        ),
        doc(
            "Aggregate",
            "gpu-spot",
            {"provider": "cloud", "selector": {"matchLabels": {"pool": "spot"}}},
        ),
    ]
    (root / "site.yaml").write_text("\n---\n".join(documents) + "\n")
    return root


@pytest.fixture
def cloud(nova_peer: NovaPeer) -> Iterator[NovaPeer]:
    nova_peer.reset()
    try:
        yield nova_peer
    finally:
        nova_peer.reset()


@pytest.fixture
def site_env(maas_peer: MaasPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("E2E_BMC_PASSWORD", "bmc-secret-for-e2e")
    monkeypatch.setenv("E2E_MAAS_KEY", maas_peer.api_key)


def engine(host: str, operation_timeout: float) -> Engine:
    fleet = MemoryFleet({f"Server/{host}": {"state": {}}})
    return Engine(
        Settings(operation_timeout=operation_timeout, timeout=5.0, retries=1),
        factories={
            "redfish": memory_factory(fleet),
            "maas": MaasProvider,
            "openstack": OpenStackProvider,
        },
    )


def register_when_deployed(maas: MaasPeer, nova: NovaPeer, host: str) -> threading.Thread:
    """Play nova-compute: register the host once MAAS reports it Deployed."""

    def watch() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if maas.machines_state()[host]["status"] == DEPLOYED:
                nova.add_compute_host(host)
                return
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.usefixtures("site_env")
def test_new_host_is_deployed_then_joins_its_aggregate(
    maas_peer: MaasPeer, cloud: NovaPeer, tmp_path: Path
) -> None:
    host = "maas-nova"
    repo = write_repo(tmp_path / "repo", maas_peer, cloud, host)
    plan = engine(host, 30).plan(repo).plan
    assert not plan.has_errors, [d.render() for d in plan.diagnostics]
    by_operation = {a.operation: a for a in plan.actions}
    deploy, add = by_operation["provisioning.deploy"], by_operation["aggregate.add_host"]
    assert add.params == {"host": host, "awaitCompute": True}
    assert deploy.id in add.depends_on
    assert "once MAAS has deployed it and its nova-compute has registered" in add.description

    watcher = register_when_deployed(maas_peer, cloud, host)
    result = engine(host, 30).apply(plan)
    watcher.join(5)
    assert result.ok, [(r.operation, r.error) for r in result.results.values()]
    deployed, joined = result.results[deploy.id], result.results[add.id]
    assert joined.started_at is not None and deployed.finished_at is not None
    assert joined.started_at >= deployed.finished_at

    again = engine(host, 30).plan(repo).plan
    assert again.actions == [], [(a.address, a.operation) for a in again.actions]


@pytest.mark.usefixtures("site_env")
def test_failed_deployment_skips_the_aggregate_add(
    maas_peer: MaasPeer, cloud: NovaPeer, tmp_path: Path
) -> None:
    host = "maas-nova-failing"
    repo = write_repo(tmp_path / "repo", maas_peer, cloud, host)
    plan = engine(host, 30).plan(repo).plan
    maas_peer.fail_next(host, "deployment", "curtin: no disk matches /dev/nvme0n1")
    result = engine(host, 30).apply(plan)
    statuses = {r.operation: (r.status, r.error) for r in result.results.values()}
    status, error = statuses["provisioning.deploy"]
    assert status is ActionStatus.FAILED
    assert "deployment failed: curtin: no disk matches /dev/nvme0n1" in (error or "")
    assert statuses["aggregate.add_host"][0] is ActionStatus.SKIPPED


@pytest.mark.usefixtures("site_env")
def test_a_host_that_never_registers_fails_its_add_after_the_timeout(
    maas_peer: MaasPeer, cloud: NovaPeer, tmp_path: Path
) -> None:
    host = "maas-nova-failing"
    maas_peer.set_status(host, "Ready")
    repo = write_repo(tmp_path / "repo", maas_peer, cloud, host)
    plan = engine(host, 3).plan(repo).plan
    result = engine(host, 3).apply(plan)
    statuses = {r.operation: (r.status, r.error) for r in result.results.values()}
    assert statuses["provisioning.deploy"][0] is ActionStatus.SUCCEEDED
    status, error = statuses["aggregate.add_host"]
    assert status is ActionStatus.FAILED
    assert error == (
        "Aggregate/gpu-spot: host maas-nova-failing did not register as a "
        "nova-compute host within 3s; it was not added"
    )
