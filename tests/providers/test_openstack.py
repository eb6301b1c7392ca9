"""The openstack provider and the Aggregate planner end to end, against a real nova-api.

Each test writes a desired-state repository (an openstack Provider, the four GPU Servers with
their `pool` labels, some Aggregates), plans the Aggregates with the Engine, applies, and checks
the cloud itself through Nova's REST API. Every test starts and ends with a cloud that has no
aggregates and no instances.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from metalform.lab.nova import NovaPeer
from providers.memory import MemoryFleet, memory_factory
from providers.openstack import OpenStackProvider
from providers.openstack.client import Cloud, HostNotFound
from reconciler.concurrency import Limiter
from reconciler.engine import Engine
from reconciler.errors import InputError
from reconciler.load import load
from reconciler.model import Action, ActionStatus, ChangeKind, Plan, Severity
from reconciler.planners.aggregate import MANAGED_KEY
from reconciler.provider import Provider, ProviderContext

pytestmark = [pytest.mark.peer]

SPOT, ONDEMAND = "Aggregate/gpu-spot", "Aggregate/gpu-ondemand"
TARGETS = (SPOT, ONDEMAND)


@pytest.fixture
def cloud(nova_peer: NovaPeer) -> Iterator[NovaPeer]:
    """The lab cloud, without aggregates or instances before and after the test."""
    nova_peer.reset()
    try:
        yield nova_peer
    finally:
        nova_peer.reset()


def doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    # JSON is YAML: no quoting surprises.
    return json.dumps(
        {
            "apiVersion": "metalform/v1",
            "kind": kind,
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
    )


def server(name: str, pool: str, hostname: str | None = None) -> str:
    # Servers are not planned here (only Aggregates are targeted): any distinct BMC will do.
    spec: dict[str, Any] = {
        "bmc": {
            "driver": "redfish",
            "address": "http://127.0.0.1:9",
            "systemId": name,
            "credential": "bmc",
        }
    }
    if hostname:
        spec["hostname"] = hostname
    return doc("Server", name, spec, {"pool": pool})


def aggregate(name: str, pool: str, **spec: Any) -> str:
    return doc(
        "Aggregate",
        name,
        {"provider": "cloud", "selector": {"matchLabels": {"pool": pool}}, **spec},
    )


def write_repo(
    path: Path, url: str, pools: dict[str, str], *aggregates: str, extra: tuple[str, ...] = ()
) -> Path:
    """A repository with the four GPU servers in `pools` (name -> pool) and `aggregates`."""
    path.mkdir(parents=True, exist_ok=True)
    documents = [
        doc("Provider", "cloud", {"type": "openstack", "url": url, "timeout": 30}),
        doc(
            "Credential",
            "bmc",
            {
                "type": "basic",
                "username": "admin",
                "password": {"fromEnv": "METALFORM_TEST_UNUSED"},
            },
        ),
        *(server(name, pool) for name, pool in sorted(pools.items())),
        *aggregates,
        *extra,
    ]
    (path / "repo.yaml").write_text("\n---\n".join(documents) + "\n")
    return path


POOLS = {
    "gpu-host-001": "spot",
    "gpu-host-002": "spot",
    "gpu-host-003": "ondemand",
    "gpu-host-004": "ondemand",
}


def engine() -> Engine:
    return Engine(factories={"openstack": OpenStackProvider})


def plan(repo: Path, targets: tuple[str, ...] = TARGETS) -> Plan:
    return engine().plan(repo, targets=targets).plan


def converge(repo: Path, targets: tuple[str, ...] = TARGETS) -> Plan:
    """Plan and apply; every action must succeed and a second plan must be empty."""
    first = plan(repo, targets)
    assert not first.has_errors, first.diagnostics
    result = engine().apply(first)
    assert result.ok, [
        (r.address, r.operation, r.status, r.error) for r in result.results.values() if r.error
    ]
    again = plan(repo, targets)
    assert again.actions == [], [(a.address, a.operation) for a in again.actions]
    return first


def nova_aggregates(peer: NovaPeer) -> dict[str, dict[str, Any]]:
    response = requests.get(f"{peer.url}/os-aggregates", headers=peer.headers(), timeout=10)
    response.raise_for_status()
    return {a["name"]: a for a in response.json()["aggregates"]}


def ops(p: Plan) -> list[tuple[str, str, Any]]:
    return sorted((a.address, a.operation, a.params.get("host")) for a in p.actions)


def by_op(p: Plan, address: str, operation: str, host: str) -> Action:
    return next(
        a
        for a in p.actions
        if a.address == address and a.operation == operation and a.params.get("host") == host
    )


# -- end to end ------------------------------------------------------------------------------


def test_create_with_zone_metadata_and_selected_hosts(cloud: NovaPeer, tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path / "repo",
        cloud.url,
        POOLS,
        aggregate(
            "gpu-spot", "spot", availabilityZone="az-gpu", metadata={"pool": "spot", "gpu": "l40"}
        ),
        aggregate("gpu-ondemand", "ondemand", metadata={"pool": "ondemand"}),
    )
    first = converge(repo)
    assert ops(first) == [
        (ONDEMAND, "aggregate.add_host", "gpu-host-003"),
        (ONDEMAND, "aggregate.add_host", "gpu-host-004"),
        (ONDEMAND, "aggregate.create", None),
        (ONDEMAND, "aggregate.set_metadata", None),
        (SPOT, "aggregate.add_host", "gpu-host-001"),
        (SPOT, "aggregate.add_host", "gpu-host-002"),
        (SPOT, "aggregate.create", None),
        (SPOT, "aggregate.set_metadata", None),
    ]
    create = by_op(first, SPOT, "aggregate.create", None)  # type: ignore[arg-type]
    for action in first.actions:
        assert action.provider == "openstack"
        if action.address == SPOT and action.operation != "aggregate.create":
            assert create.id in action.depends_on
    found = nova_aggregates(cloud)
    assert found["gpu-spot"]["availability_zone"] == "az-gpu"
    assert found["gpu-spot"]["metadata"] == {
        "availability_zone": "az-gpu",
        "pool": "spot",
        "gpu": "l40",
        MANAGED_KEY: "true",
    }
    assert sorted(found["gpu-spot"]["hosts"]) == ["gpu-host-001", "gpu-host-002"]
    assert found["gpu-ondemand"]["availability_zone"] is None
    assert sorted(found["gpu-ondemand"]["hosts"]) == ["gpu-host-003", "gpu-host-004"]

    # A metadata key Git drops is removed; a changed one is set.
    repo = write_repo(
        tmp_path / "repo",
        cloud.url,
        POOLS,
        aggregate("gpu-spot", "spot", availabilityZone="az-gpu", metadata={"pool": "preempt"}),
        aggregate("gpu-ondemand", "ondemand", metadata={"pool": "ondemand"}),
    )
    second = converge(repo)
    assert [(a.operation, a.params) for a in second.actions] == [
        ("aggregate.set_metadata", {"metadata": {"gpu": None, "pool": "preempt"}})
    ]
    assert nova_aggregates(cloud)["gpu-spot"]["metadata"] == {
        "availability_zone": "az-gpu",
        "pool": "preempt",
        MANAGED_KEY: "true",
    }


def test_moved_host_joins_its_new_aggregate_before_leaving_the_old(
    cloud: NovaPeer, tmp_path: Path
) -> None:
    aggregates = (aggregate("gpu-spot", "spot"), aggregate("gpu-ondemand", "ondemand"))
    converge(write_repo(tmp_path / "repo", cloud.url, POOLS, *aggregates))
    moved = {**POOLS, "gpu-host-002": "ondemand"}
    repo = write_repo(tmp_path / "repo", cloud.url, moved, *aggregates)
    p = plan(repo)
    assert ops(p) == [
        (ONDEMAND, "aggregate.add_host", "gpu-host-002"),
        (SPOT, "aggregate.remove_host", "gpu-host-002"),
    ]
    add = by_op(p, ONDEMAND, "aggregate.add_host", "gpu-host-002")
    remove = by_op(p, SPOT, "aggregate.remove_host", "gpu-host-002")
    assert remove.depends_on == (add.id,)
    assert remove.disruptive and not add.disruptive
    converge(repo)
    found = nova_aggregates(cloud)
    assert sorted(found["gpu-ondemand"]["hosts"]) == [
        "gpu-host-002",
        "gpu-host-003",
        "gpu-host-004",
    ]
    assert found["gpu-spot"]["hosts"] == ["gpu-host-001"]


def test_moved_host_leaves_first_between_availability_zones(
    cloud: NovaPeer, tmp_path: Path
) -> None:
    aggregates = (
        aggregate("gpu-spot", "spot", availabilityZone="az-spot"),
        aggregate("gpu-ondemand", "ondemand", availabilityZone="az-ondemand"),
    )
    converge(write_repo(tmp_path / "repo", cloud.url, POOLS, *aggregates))
    repo = write_repo(
        tmp_path / "repo", cloud.url, {**POOLS, "gpu-host-001": "ondemand"}, *aggregates
    )
    p = plan(repo)
    add = by_op(p, ONDEMAND, "aggregate.add_host", "gpu-host-001")
    remove = by_op(p, SPOT, "aggregate.remove_host", "gpu-host-001")
    # Nova refuses one host in two zones: out of az-spot first, then into az-ondemand.
    assert add.depends_on == (remove.id,)
    assert remove.depends_on == ()
    converge(repo)
    found = nova_aggregates(cloud)
    assert "gpu-host-001" in found["gpu-ondemand"]["hosts"]
    assert "gpu-host-001" not in found["gpu-spot"]["hosts"]


def test_removal_of_a_host_with_instances_is_refused_then_allowed(
    cloud: NovaPeer, tmp_path: Path
) -> None:
    aggregates = [aggregate("gpu-spot", "spot"), aggregate("gpu-ondemand", "ondemand")]
    converge(write_repo(tmp_path / "repo", cloud.url, POOLS, *aggregates))
    assert cloud.set_instances("gpu-host-002", 3) == 3
    moved = {**POOLS, "gpu-host-002": "ondemand"}
    repo = write_repo(tmp_path / "repo", cloud.url, moved, *aggregates)
    p = plan(repo)
    remove = by_op(p, SPOT, "aggregate.remove_host", "gpu-host-002")
    assert remove.status is ActionStatus.REFUSED
    assert remove.reason == "host gpu-host-002 still runs 3 instances"
    assert p.summary.refused == 1
    warnings = [d.message for d in p.diagnostics if d.severity is Severity.WARNING]
    assert any("still runs 3 instances" in m and "onInstances" in m for m in warnings)
    # The join is safe on its own: it is applied, the host stays in both aggregates.
    result = engine().apply(p)
    statuses = {(r.address, r.operation): r.status for r in result.results.values()}
    assert statuses == {
        (ONDEMAND, "aggregate.add_host"): ActionStatus.SUCCEEDED,
        (SPOT, "aggregate.remove_host"): ActionStatus.REFUSED,
    }
    assert "gpu-host-002" in nova_aggregates(cloud)["gpu-spot"]["hosts"]
    assert "gpu-host-002" in nova_aggregates(cloud)["gpu-ondemand"]["hosts"]

    aggregates[0] = aggregate("gpu-spot", "spot", onInstances="Allow")
    repo = write_repo(tmp_path / "repo", cloud.url, moved, *aggregates)
    allowed = converge(repo)
    assert [(a.operation, a.status) for a in allowed.actions] == [
        ("aggregate.remove_host", ActionStatus.PLANNED)
    ]
    assert nova_aggregates(cloud)["gpu-spot"]["hosts"] == ["gpu-host-001"]
    assert cloud.instances() == {"gpu-host-002": 3}  # the instances keep running


def site_engine() -> Engine:
    """The openstack provider, and in-memory BMCs for the Servers (which declare nothing)."""
    fleet = MemoryFleet({f"Server/{name}": {"state": {}} for name in POOLS})
    return Engine(factories={"openstack": OpenStackProvider, "redfish": memory_factory(fleet)})


@pytest.fixture
def bmc_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning the whole repository resolves the Servers' credential (never used here)."""
    monkeypatch.setenv("METALFORM_TEST_UNUSED", "unused-bmc-password")


@pytest.mark.usefixtures("bmc_password")
def test_an_aggregate_git_drops_is_emptied_and_deleted_not_one_made_by_hand(
    cloud: NovaPeer, tmp_path: Path
) -> None:
    spot, ondemand = aggregate("gpu-spot", "spot"), aggregate("gpu-ondemand", "ondemand")
    converge(write_repo(tmp_path / "repo", cloud.url, POOLS, spot, ondemand))
    made = requests.post(
        f"{cloud.url}/os-aggregates",
        headers=cloud.headers(),
        timeout=10,
        json={"aggregate": {"name": "by-hand"}},
    )
    made.raise_for_status()

    repo = write_repo(tmp_path / "repo", cloud.url, POOLS, ondemand)
    p = site_engine().plan(repo).plan
    assert not p.has_errors, [d.render() for d in p.diagnostics]
    assert [(a.address, a.operation, a.params.get("host"), a.disruptive) for a in p.actions] == [
        (SPOT, "aggregate.remove_host", "gpu-host-001", True),
        (SPOT, "aggregate.remove_host", "gpu-host-002", True),
        (SPOT, "aggregate.delete", None, True),
    ]
    assert p.actions[2].depends_on == (p.actions[0].id, p.actions[1].id)
    change = next(c for c in p.changes if c.address == SPOT)
    assert change.action is ChangeKind.DELETE
    # the zone was never set: not shown as `(unset) -> (unset)`
    assert {e.path for e in change.diff} == {
        "hosts.gpu-host-001",
        "hosts.gpu-host-002",
    }
    assert p.summary.delete == 1

    result = site_engine().apply(p)
    assert result.ok, [(r.operation, r.error) for r in result.results.values()]
    found = nova_aggregates(cloud)
    assert "gpu-spot" not in found
    assert {"gpu-ondemand", "by-hand"} <= set(found)
    assert site_engine().plan(repo).plan.actions == []


@pytest.mark.usefixtures("bmc_password")
def test_deleting_an_aggregate_whose_hosts_run_instances_is_refused(
    cloud: NovaPeer, tmp_path: Path
) -> None:
    spot, ondemand = aggregate("gpu-spot", "spot"), aggregate("gpu-ondemand", "ondemand")
    converge(write_repo(tmp_path / "repo", cloud.url, POOLS, spot, ondemand))
    cloud.set_instances("gpu-host-001", 2)
    p = site_engine().plan(write_repo(tmp_path / "repo", cloud.url, POOLS, ondemand)).plan
    remove = by_op(p, SPOT, "aggregate.remove_host", "gpu-host-001")
    assert remove.status is ActionStatus.REFUSED
    assert remove.reason == "host gpu-host-001 still runs 2 instances"
    warnings = [d.message for d in p.diagnostics if d.severity is Severity.WARNING]
    assert (
        "deleting the aggregate is refused: host gpu-host-001 still runs 2 instances "
        "(empty it through Git first: hosts: [] with onInstances: Allow, then drop it)" in warnings
    )
    # The plan shows the delete will not happen either; apply removes the other host only.
    delete = next(a for a in p.actions if a.operation == "aggregate.delete")
    assert delete.status is ActionStatus.REFUSED
    result = site_engine().apply(p)
    statuses = [(a.operation, a.params.get("host"), result.results[a.id].status) for a in p.actions]
    assert statuses == [
        ("aggregate.remove_host", "gpu-host-001", ActionStatus.REFUSED),
        ("aggregate.remove_host", "gpu-host-002", ActionStatus.SUCCEEDED),
        ("aggregate.delete", None, ActionStatus.REFUSED),
    ]
    assert nova_aggregates(cloud)["gpu-spot"]["hosts"] == ["gpu-host-001"]


def test_metalform_metadata_keys_are_reserved(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path / "repo",
        "http://127.0.0.1:9/v2.1",
        POOLS,
        aggregate("gpu-spot", "spot", metadata={MANAGED_KEY: "false"}),
    )
    with pytest.raises(InputError) as caught:
        load(repo)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.address == SPOT
    assert "metadata key 'metalform:managed' is reserved" in diagnostic.message


def test_unknown_host_is_a_clear_error(cloud: NovaPeer, tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path / "repo",
        cloud.url,
        POOLS,
        doc("Aggregate", "gpu-spot", {"provider": "cloud", "hosts": ["gpu-host-001", "ghost"]}),
        extra=(server("ghost", "none", hostname="ghost.example.net"),),
    )
    p = plan(repo, (SPOT,))
    assert p.has_errors
    errors = [d.message for d in p.diagnostics if d.severity is Severity.ERROR]
    assert errors == [
        "host 'ghost.example.net' is not a compute host of the cloud of "
        "Provider/cloud; it is not added"
    ]
    assert ops(p) == [
        (SPOT, "aggregate.add_host", "gpu-host-001"),
        (SPOT, "aggregate.create", None),
    ]

    # Executed anyway (a host deleted after the plan was made): Nova's 404, said plainly.
    desired = load(repo)
    provider = OpenStackProvider(context(desired.resources))
    try:
        provider.execute(
            Action(
                id=1,
                address=SPOT,
                operation="aggregate.create",
                params={"name": "gpu-spot", "availabilityZone": None},
            ),
            desired.resources[SPOT],
        )
        with pytest.raises(HostNotFound, match="Nova knows no such compute host"):
            provider.execute(
                Action(
                    id=2,
                    address=SPOT,
                    operation="aggregate.add_host",
                    params={"host": "ghost.example.net"},
                ),
                desired.resources[SPOT],
            )
    finally:
        provider.close()


# -- the provider on its own -----------------------------------------------------------------


def context(resources: Any, retries: int = 2) -> ProviderContext:
    def no_credential(name: str) -> Any:
        raise AssertionError(f"no credential expected, asked for {name}")

    return ProviderContext(
        limiter=Limiter(4, 2),
        credential=no_credential,
        timeout=30,
        retries=retries,
        resources=resources,
    )


def test_read_costs_three_listings_per_cloud(
    cloud: NovaPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        cloud.url,
        POOLS,
        aggregate("gpu-spot", "spot"),
        aggregate("gpu-ondemand", "ondemand"),
    )
    converge(repo)
    cloud.set_instances("gpu-host-001", 2)
    calls: list[str] = []
    original = Cloud.call

    def counting(self: Cloud, what: str, request: Any) -> Any:
        calls.append(what)
        return original(self, what, request)

    monkeypatch.setattr(Cloud, "call", counting)
    desired = load(repo)
    provider = OpenStackProvider(context(desired.resources))
    assert isinstance(provider, Provider)
    try:
        live = provider.read([desired.resources[SPOT], desired.resources[ONDEMAND]])
        # Discovery (a plan's next step) reuses the read's listings.
        managed = provider.discover([desired.resources["Provider/cloud"]])
    finally:
        provider.close()
    assert sorted(calls) == ["list aggregates", "list compute services", "list hypervisors"]
    assert sorted(managed) == [ONDEMAND, SPOT]
    spot = live[SPOT]
    assert spot.state == {
        "availabilityZone": None,
        "hosts.gpu-host-001": True,
        "hosts.gpu-host-002": True,
    }
    assert spot.facts["instances"] == {"gpu-host-001": 2, "gpu-host-002": 0}
    assert spot.facts["computeHosts"] == sorted(POOLS)
    assert live[ONDEMAND].facts["instances"] == {"gpu-host-003": 0, "gpu-host-004": 0}


def test_unreachable_cloud_plans_nothing(tmp_path: Path) -> None:
    repo = write_repo(
        tmp_path / "repo", "http://127.0.0.1:9/v2.1", POOLS, aggregate("gpu-spot", "spot")
    )
    desired = load(repo)
    provider = OpenStackProvider(context(desired.resources, retries=0))
    try:
        live = provider.read([desired.resources[SPOT]])[SPOT]
    finally:
        provider.close()
    assert not live.reachable
    assert live.error and "did not answer" in live.error


# -- the example inventory -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_example_inventory_aggregates_converge(cloud: NovaPeer, tmp_path: Path) -> None:
    """inventory-example's two GPU aggregates, planned alone against the lab cloud."""
    inventory = tmp_path / "inventory"
    shutil.copytree(ROOT / "inventory-example", inventory)
    # Until the demo lab starts nova, these two files wait under a `.pending` suffix.
    for pending in inventory.rglob("*.yaml.pending"):
        pending.rename(pending.with_suffix(""))
    for path in inventory.rglob("*.yaml"):
        text = path.read_text()
        if "127.0.0.1:8774" in text:
            path.write_text(text.replace("http://127.0.0.1:8774/v2.1", cloud.url))
    first = converge(inventory, TARGETS)
    assert {(a.address, a.operation) for a in first.actions} >= {
        (SPOT, "aggregate.create"),
        (ONDEMAND, "aggregate.create"),
    }
    found = nova_aggregates(cloud)
    assert sorted(found["gpu-spot"]["hosts"]) == ["gpu-host-001", "gpu-host-002"]
    assert sorted(found["gpu-ondemand"]["hosts"]) == ["gpu-host-003", "gpu-host-004"]
    assert found["gpu-spot"]["metadata"]["preemptible"] == "true"
