"""The farm itself, as sushy (the real provider's library) sees it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sushy

from metalform.lab.farm import SYSTEM_ID, FarmThread
from metalform.lab.farm.peer import FarmPeer
from reconciler.engine import Engine, Settings
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
        FarmPeer.attach(tmp_path / "fleet").stop()
    assert not farm.is_running()
