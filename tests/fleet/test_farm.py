"""The farm itself, as sushy (the real provider's library) sees it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import pytest
import sushy

from metalform.lab.farm import SYSTEM_ID, FarmConfig, FarmThread
from metalform.lab.farm.peer import FarmPeer
from metalform.lab.farm.repo import farm_server
from providers.redfish import RedfishProvider
from reconciler.concurrency import Limiter
from reconciler.engine import Engine, Settings
from reconciler.provider import ProviderContext
from reconciler.secrets import ResolvedCredential, Secret
from tests.fleet.conftest import PASSWORD, USERNAME


def test_bios_writes_are_pending_until_the_next_reset(fleet: FarmThread) -> None:
    root = sushy.Sushy(
        fleet.urls[0] + "/redfish/v1/", username=USERNAME, password=PASSWORD, verify=False
    )
    system = root.get_system(f"/redfish/v1/Systems/{SYSTEM_ID}")
    registry = system.bios.get_attribute_registry()
    assert registry is not None and len(registry.registry_entries.attributes) >= 250
    before = system.bios.attributes["ProcTurboMode"]
    wanted = "Disabled" if before == "Enabled" else "Enabled"

    system.bios.set_attributes({"ProcTurboMode": wanted})
    system.bios.refresh()
    assert system.bios.attributes["ProcTurboMode"] == before
    assert system.bios.pending_attributes["ProcTurboMode"] == wanted

    system.reset_system(sushy.ResetType.FORCE_RESTART)
    system.refresh()
    system.bios.refresh()
    assert system.bios.attributes["ProcTurboMode"] == wanted
    assert system.bios.pending_attributes == {}
    stats = fleet.stats()[0]
    assert stats["routes"]["bios.patch"] == 1 and stats["routes"]["reset"] == 1


def test_only_the_service_root_is_open_without_credentials(fleet: FarmThread) -> None:
    # sushy reads the service root before authenticating: the farm serves it to anyone.
    root = sushy.Sushy(
        fleet.urls[1] + "/redfish/v1/", username=USERNAME, password="wrong", verify=False
    )
    with pytest.raises(sushy.exceptions.AccessError) as refused:
        root.get_system(f"/redfish/v1/Systems/{SYSTEM_ID}")

    assert refused.value.status_code == 401
    routes = fleet.stats()[1]["routes"]
    assert routes["root"] >= 1 and "system" not in routes


def test_the_lab_farm_runs_as_a_peer_with_a_repository_to_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFORM_CACHE_DIR", str(tmp_path / "cache"))
    farm = FarmPeer(tmp_path / "fleet", count=4).start()
    try:
        attached = FarmPeer.attach(tmp_path / "fleet")
        assert attached.is_running() and len(attached.urls) == 4
        assert len({url.split("//")[1].split(":")[0] for url in attached.urls}) == 4

        run = Engine(Settings()).plan(farm.repo)

        assert run.plan.summary.unreachable == 0, [d.render() for d in run.plan.diagnostics]
        assert run.plan.summary.update == 4
        assert farm.password not in run.plan.model_dump_json()
    finally:
        farm.stop()  # the starter stops (and reaps) it; `lab down` would attach to stop it
    assert not farm.is_running()
    assert not FarmPeer.attach(tmp_path / "fleet").is_running()


def test_reads_log_in_to_a_bmc_that_refuses_basic_authentication() -> None:
    farm = FarmThread(
        FarmConfig(count=2, latency=0.01, username=USERNAME, password=PASSWORD, sessions_only=True)
    ).start()
    credential = ResolvedCredential(name="bmc", username=USERNAME, secret=Secret(PASSWORD))
    provider = RedfishProvider(
        ProviderContext(limiter=Limiter(4, 2), credential=lambda name: credential)
    )
    servers = [farm_server(f"s{i}", url) for i, url in enumerate(farm.urls)]
    try:
        live = provider.read(servers)
        second = provider.read(servers)
        provider.close()
        stats = farm.stats()
    finally:
        farm.stop()

    assert all(item.state.get("power") == "On" for item in [*live.values(), *second.values()])
    for bmc in stats:
        # One refused basic GET, one login, then every read with the session's token.
        assert bmc["routes"]["unauthorized"] == 1
        assert bmc["routes"]["session.post"] == 1
        assert bmc["routes"]["system"] == 2


def test_stopping_the_farm_ends_its_open_connections() -> None:
    # A client that keeps its connection open past the stop (as a pooled HTTP client does)
    # must not leave a connection task pending on the closed loop: such a task is destroyed
    # later, at some garbage collection, with an error logged into whatever runs then.
    farm = FarmThread(
        FarmConfig(count=1, latency=0.0, username=USERNAME, password=PASSWORD)
    ).start()
    address, port = farm.urls[0].removeprefix("https://").split(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((address, int(port)), timeout=10) as raw,
        context.wrap_socket(raw) as client,
    ):
        client.sendall(b"GET /redfish/v1/ HTTP/1.1\r\nHost: bmc\r\n\r\n")
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        assert len(farm.farm.connections) == 1  # kept alive, waiting for a next request
        farm.stop()

    assert farm.farm.connections == {}
    assert asyncio.all_tasks(farm.loop) == set()
