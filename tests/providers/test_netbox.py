"""NetBox as an inventory source: the simulator (driven by the real pynetbox), the mapping of
devices to Servers, the merge with Git, and a plan through the engine showing `(from netbox)`."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pynetbox
import pytest
import requests

from metalform.lab.netbox import NetboxPeer, lab_device
from providers.memory import MemoryFleet, memory_factory
from providers.netbox import fetch_devices, import_inventory
from providers.netbox.inventory import SOURCE, merge_inventory, servers_from_devices
from reconciler.engine import CredentialResolver, Engine
from reconciler.errors import AuthenticationError, MetalformError, PermanentError, UnreachableError
from reconciler.load import DesiredState
from reconciler.model import ActionStatus, Metadata, Resource, Severity
from reconciler.model.credentials import CredentialSpec, CredentialType, SecretRef
from reconciler.model.hardware import Bmc, BmcDriver, PowerState, ServerSpec
from reconciler.render import render_text
from reconciler.secrets import ResolvedCredential, Secret, SecretUnavailable
from tests.fixtures.netbox import (
    BMC,
    BULK,
    CREDENTIAL,
    PAGE_SIZE,
    PROVIDER,
    WRONG_TOKEN,
    netbox_provider,
)

TEMPLATE = {"bmc": {"credential": "bmc", "verifyTls": False}, "power": "On"}


def resolver_for(token: str) -> Any:
    def resolve(name: str) -> ResolvedCredential:
        if name != CREDENTIAL:
            raise SecretUnavailable(what=f"Credential/{name}", ref="no such credential")
        return ResolvedCredential(name=name, username=None, secret=Secret(token))

    return resolve


def credential(name: str, type: CredentialType = CredentialType.TOKEN) -> Resource:
    if type is CredentialType.TOKEN:
        spec = CredentialSpec(type=type, token=SecretRef(from_env="NETBOX_TOKEN"))
    else:
        spec = CredentialSpec(
            type=type, username="admin", password=SecretRef(from_env="BMC_PASSWORD")
        )
    return Resource(kind="Credential", metadata=Metadata(name=name), spec=spec)


def git_server(name: str, address: str = "http://127.0.0.1:7") -> Resource:
    spec = ServerSpec(
        bmc=Bmc(driver=BmcDriver.REDFISH, address=address, credential="bmc"), power=PowerState.OFF
    )
    return Resource(kind="Server", metadata=Metadata(name=name), spec=spec)


def desired_with(*resources: Resource) -> DesiredState:
    base = [credential(CREDENTIAL), credential("bmc", CredentialType.BASIC)]
    return DesiredState(
        revision="worktree:test", resources={r.address: r for r in [*base, *resources]}
    )


# --- the simulator, through pynetbox ------------------------------------------------------------


def test_simulator_pages_through_all_devices_with_pynetbox(netbox_peer: NetboxPeer) -> None:
    api = pynetbox.api(netbox_peer.url, token=netbox_peer.token)
    assert api.version == "4.2"
    assert api.status()["netbox-version"].startswith("4.")
    devices = list(api.dcim.devices.filter(tag="bulk"))
    assert len(devices) == BULK > 2 * PAGE_SIZE
    assert sorted(d.name for d in devices) == [f"bulk-{i:03d}" for i in range(BULK)]
    first = dict(devices[0])
    assert first["site"]["slug"] == "bulk1" and first["role"]["slug"] == "compute"
    assert first["tags"][0]["slug"] == "bulk"
    assert set(first["custom_fields"]) == {"bmc_address", "bmc_driver", "bmc_system_id"}


def test_simulator_pagination_shape_and_filters(netbox_peer: NetboxPeer) -> None:
    headers = {"Authorization": f"Token {netbox_peer.token}"}
    url = f"{netbox_peer.url}/api/dcim/devices/"
    page = requests.get(url, params={"tag": "bulk"}, headers=headers, timeout=5).json()
    assert page["count"] == BULK and len(page["results"]) == PAGE_SIZE
    assert page["previous"] is None and "offset=50" in page["next"] and "tag=bulk" in page["next"]
    last = requests.get(
        url, params={"tag": "bulk", "limit": "50", "offset": "100"}, headers=headers, timeout=5
    ).json()
    assert len(last["results"]) == 20 and last["next"] is None and last["previous"]
    both = requests.get(
        url, params=[("tag", "metalform"), ("tag", "gpu")], headers=headers, timeout=5
    ).json()
    assert [d["name"] for d in both["results"]] == ["GPU-Host-101"]  # tags are conjoined
    sites = requests.get(
        url,
        params=[("site", "yul1"), ("site", "yyz2"), ("tag", "metalform")],
        headers=headers,
        timeout=5,
    ).json()
    assert sites["count"] == 5  # other filters are alternatives


def test_simulator_checks_the_token(netbox_peer: NetboxPeer) -> None:
    url = f"{netbox_peer.url}/api/dcim/devices/"
    assert requests.get(url, timeout=5).status_code == 401
    wrong = requests.get(url, headers={"Authorization": f"Token {WRONG_TOKEN}"}, timeout=5)
    assert wrong.status_code == 401 and wrong.json() == {"detail": "Invalid token"}
    assert requests.get(f"{netbox_peer.url}/api/", timeout=5).status_code == 200
    with pytest.raises(pynetbox.RequestError):
        list(pynetbox.api(netbox_peer.url, token=WRONG_TOKEN).dcim.devices.all())


def test_attach_finds_the_running_simulator(netbox_peer: NetboxPeer) -> None:
    attached = NetboxPeer.attach(netbox_peer.state_dir)
    assert attached.url == netbox_peer.url and attached.is_running()
    assert attached.token == netbox_peer.token


# --- the client ---------------------------------------------------------------------------------


def test_fetch_devices_applies_the_filter(netbox_peer: NetboxPeer) -> None:
    provider = netbox_provider(netbox_peer.url + "/api/")  # a trailing /api is tolerated
    devices = fetch_devices(provider, Secret(netbox_peer.token))
    assert sorted(d["name"] for d in devices) == [
        "GPU-Host-101",
        "bad_name host",
        "git-host",
        "gpu-host-102",
        "no-bmc-host",
    ]
    bulk = fetch_devices(
        netbox_provider(netbox_peer.url, filter={"tag": "bulk"}), Secret(netbox_peer.token)
    )
    assert len(bulk) == BULK


def test_wrong_token_is_a_clear_error_without_the_token(netbox_peer: NetboxPeer) -> None:
    with pytest.raises(AuthenticationError) as caught:
        fetch_devices(netbox_provider(netbox_peer.url), Secret(WRONG_TOKEN))
    message = str(caught.value)
    assert f"Provider/{PROVIDER}" in message and f"Credential/{CREDENTIAL}" in message
    assert WRONG_TOKEN not in message and netbox_peer.token not in message


def test_netbox_down_names_the_provider() -> None:
    provider = netbox_provider("http://127.0.0.1:9", name="netbox-down")
    with pytest.raises(UnreachableError, match=r"Provider/netbox-down .*connection refused"):
        fetch_devices(provider, Secret("x" * 40))


def test_netbox_errors_and_hangs_are_clear(netbox_peer: NetboxPeer) -> None:
    provider = netbox_provider(netbox_peer.url, timeout=0.5)
    try:
        netbox_peer.set_fault("error")
        with pytest.raises(PermanentError, match=rf"Provider/{PROVIDER} .*HTTP 500"):
            fetch_devices(provider, Secret(netbox_peer.token))
        netbox_peer.set_fault("hang")
        with pytest.raises(UnreachableError, match=r"no answer within 0.5s"):
            fetch_devices(provider, Secret(netbox_peer.token))
    finally:
        netbox_peer.set_fault(None)
    assert len(fetch_devices(provider, Secret(netbox_peer.token))) == 5


# --- mapping devices to Servers (pure) ----------------------------------------------------------


def test_devices_become_servers_with_labels_bmc_and_template() -> None:
    devices = [
        lab_device(
            1,
            "GPU-Host-101",
            site="yul1",
            role="gpu",
            tags=("metalform", "gpu"),
            bmc_address=BMC,
            bmc_system_id="sys-1",
        )
    ]
    result = servers_from_devices(devices, PROVIDER, TEMPLATE)
    assert result.diagnostics == []
    server = result.servers["Server/gpu-host-101"]
    assert server.source == SOURCE == "netbox"
    assert server.metadata.labels == {
        "site": "yul1",
        "role": "gpu",
        "tag.metalform": "true",
        "tag.gpu": "true",
    }
    assert server.metadata.annotations["netbox.device-id"] == "1"
    bmc = server.spec.bmc
    assert (bmc.driver, bmc.address, bmc.system_id) == (BmcDriver.REDFISH, BMC, "sys-1")
    assert bmc.credential == "bmc" and bmc.verify_tls is False  # from the template
    assert server.spec.power is PowerState.ON
    # The imported document validates as a Server resource, as if written in Git.
    assert server.document()["spec"]["bmc"]["address"] == BMC


def test_old_netbox_device_role_is_read() -> None:
    device = lab_device(7, "old-role", role="storage", bmc_address=BMC)
    del device["role"]
    result = servers_from_devices([device], PROVIDER, TEMPLATE)
    assert result.servers["Server/old-role"].metadata.labels["role"] == "storage"


def test_invalid_device_name_is_a_diagnostic_naming_the_device() -> None:
    devices = [
        lab_device(3, "bad_name host", bmc_address=BMC),
        lab_device(8, None, bmc_address=BMC),
        lab_device(9, "x" * 64, bmc_address=BMC),
    ]
    result = servers_from_devices(devices, PROVIDER, TEMPLATE)
    assert result.servers == {}
    messages = [d.message for d in result.diagnostics]
    assert "NetBox device 'bad_name host' (id 3)" in messages[0]
    assert "(unnamed) (id 8) has no name" in messages[1]
    assert "at most 63" in messages[2]
    assert all(d.severity is Severity.WARNING for d in result.diagnostics)
    assert all(str(d.location) == f"Provider/{PROVIDER}" for d in result.diagnostics)


def test_device_without_bmc_address_is_a_diagnostic() -> None:
    result = servers_from_devices(
        [lab_device(4, "no-bmc-host", bmc_address=None)], PROVIDER, TEMPLATE
    )
    assert result.servers == {}
    [diag] = result.diagnostics
    assert "NetBox device 'no-bmc-host' (id 4) has no BMC address" in diag.message


def test_template_that_does_not_validate_names_device_and_field() -> None:
    result = servers_from_devices(
        [lab_device(1, "h1", bmc_address=BMC)],
        PROVIDER,
        {"bmc": {"credential": "bmc"}, "powr": "On"},
    )
    [diag] = result.diagnostics
    assert diag.address == "Server/h1" and diag.field == "spec.powr"
    assert "NetBox device 'h1' (id 1)" in diag.message and "unknown field" in diag.message


def test_git_wins_on_conflict_with_a_diagnostic() -> None:
    desired = desired_with(git_server("git-host"))
    imported = servers_from_devices(
        [
            lab_device(5, "Git-Host", bmc_address="http://127.0.0.1:8"),
            lab_device(6, "nb-only", bmc_address=BMC),
        ],
        PROVIDER,
        TEMPLATE,
    )
    merged = merge_inventory(desired, {PROVIDER: imported})
    assert merged.resources["Server/git-host"].source == "git"
    assert merged.resources["Server/git-host"].spec.bmc.address == "http://127.0.0.1:7"
    assert merged.resources["Server/nb-only"].source == "netbox"
    [diag] = [d for d in merged.warnings if d.address == "Server/git-host"]
    assert "Git wins" in diag.message and "device 5" in diag.message
    assert desired.resources.keys() < merged.resources.keys()  # the input is not changed


def test_undefined_credential_in_template_drops_the_server() -> None:
    desired = desired_with()
    imported = servers_from_devices(
        [lab_device(1, "h1", bmc_address=BMC)], PROVIDER, {"bmc": {"credential": "nowhere"}}
    )
    merged = merge_inventory(desired, {PROVIDER: imported})
    assert "Server/h1" not in merged.resources
    [diag] = merged.warnings
    assert "Credential 'nowhere' is not defined" in diag.message
    assert diag.field == "spec.bmc.credential"


# --- import_inventory ---------------------------------------------------------------------------


def test_import_inventory_from_the_simulator(netbox_peer: NetboxPeer) -> None:
    desired = desired_with(
        netbox_provider(netbox_peer.url, template=TEMPLATE), git_server("git-host")
    )
    merged = import_inventory(desired, resolver_for(netbox_peer.token))
    imported = {a for a, r in merged.resources.items() if r.source == "netbox"}
    assert imported == {"Server/gpu-host-101", "Server/gpu-host-102"}
    assert merged.resources["Server/gpu-host-102"].spec.bmc.driver is BmcDriver.IPMI
    warnings = " | ".join(d.render() for d in merged.warnings)
    assert "'bad_name host'" in warnings and "'no-bmc-host'" in warnings
    assert "Git wins" in warnings
    assert netbox_peer.token not in warnings


def test_import_without_netbox_provider_is_a_no_op() -> None:
    desired = desired_with(git_server("a1"))

    def never(*_: Any) -> list[dict[str, Any]]:
        raise AssertionError("NetBox must not be contacted")

    assert import_inventory(desired, resolver_for("unused"), fetch=never) is desired


def test_import_inventory_down_names_the_provider() -> None:
    desired = desired_with(netbox_provider("http://127.0.0.1:9", name="nb-down"))
    with pytest.raises(MetalformError, match="Provider/nb-down"):
        import_inventory(desired, resolver_for("t" * 40))


def test_missing_token_names_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NETBOX_TOKEN", raising=False)
    desired = desired_with(netbox_provider("http://127.0.0.1:9"))
    resolver = CredentialResolver(desired.resources, None)
    with pytest.raises(MetalformError, match=rf"Provider/{PROVIDER}: .*NETBOX_TOKEN"):
        import_inventory(desired, resolver)


def test_basic_credential_for_netbox_is_refused() -> None:
    desired = desired_with(netbox_provider("http://127.0.0.1:9", credential="bmc"))
    with pytest.raises(MetalformError, match="needs a Credential of type token"):
        import_inventory(desired, resolver_for("unused"))


# --- a plan through the engine ------------------------------------------------------------------


def write_repo(root: Path, peer: NetboxPeer) -> Path:
    root.mkdir()
    (root / "inventory.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: metalform/v1
        kind: Credential
        metadata: {{name: bmc}}
        spec: {{username: admin, password: {{fromEnv: BMC_PASSWORD}}}}
        ---
        apiVersion: metalform/v1
        kind: Credential
        metadata: {{name: {CREDENTIAL}}}
        spec: {{type: token, token: {{fromFile: "{peer.token_file}"}}}}
        ---
        apiVersion: metalform/v1
        kind: Provider
        metadata: {{name: {PROVIDER}}}
        spec:
          type: netbox
          url: "{peer.url}"
          credential: {CREDENTIAL}
          timeout: 5
          inventory:
            filter: {{tag: metalform}}
            template:
              bmc: {{credential: bmc}}
              power: "On"
        ---
        apiVersion: metalform/v1
        kind: Server
        metadata: {{name: git-host}}
        spec:
          bmc: {{driver: redfish, address: "http://127.0.0.1:7", credential: bmc}}
          power: "On"
        """),
        encoding="utf-8",
    )
    return root


def test_plan_shows_imported_servers_from_netbox(
    netbox_peer: NetboxPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BMC_PASSWORD", "bmc-secret-for-tests")
    repo = write_repo(tmp_path / "repo", netbox_peer)

    fleet = MemoryFleet(
        {
            "Server/gpu-host-101": {"state": {"power": "Off"}},
            "Server/gpu-host-102": {"state": {"power": "On"}},
            "Server/git-host": {"state": {"power": "Off"}},
        }
    )
    factory = memory_factory(fleet)
    engine = Engine(factories={"redfish": factory, "ipmi": factory})
    plan = engine.plan(repo).plan
    text = render_text(plan)
    assert "Server/gpu-host-101  (from netbox)" in text
    assert "Server/git-host  (from" not in text
    assert {(a.address, a.operation) for a in plan.actions} == {
        ("Server/gpu-host-101", "power.on"),
        ("Server/git-host", "power.on"),
    }
    assert not plan.has_errors
    messages = " | ".join(d.message for d in plan.diagnostics)
    assert "Git wins" in messages and "'bad_name host'" in messages
    assert netbox_peer.token not in text
    result = engine.apply(plan)
    assert result.count(ActionStatus.SUCCEEDED) == 2
    assert fleet.systems["Server/gpu-host-101"]["state"]["power"] == "On"
