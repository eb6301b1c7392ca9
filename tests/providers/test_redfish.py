"""The Redfish provider against a real sushy-emulator (the lab BMC), and its pure mappings."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metalform.lab.redfish import FaultKind, LabSystem, PeerError, RedfishPeer
from providers.redfish import RedfishProvider, mapping
from providers.redfish.client import base_url, endpoint_of
from reconciler.errors import PermanentError, ProviderError
from reconciler.model import Action, Health, LiveResource, Resource
from reconciler.provider import Provider
from tests.fixtures.redfish import (
    LAB_PASSWORD,
    READ_ONLY_SYSTEM,
    WRONG_CREDENTIAL,
    WRONG_PASSWORD,
    make_context,
    server,
    start_peer,
)

peer_test = pytest.mark.peer


@pytest.fixture
def provider() -> Iterator[RedfishProvider]:
    p = RedfishProvider(make_context())
    try:
        yield p
    finally:
        p.close()


def act(resource: Resource, operation: str, **params: Any) -> Action:
    return Action(id=1, address=resource.address, operation=operation, params=params)


def bios(live: LiveResource, name: str) -> Any:
    return live.state[mapping.BIOS_PREFIX + name]


# -- reading -------------------------------------------------------------------------------


@peer_test
def test_read_reports_power_boot_bios_and_hardware(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("read", redfish_peer.url, READ_ONLY_SYSTEM)
    live = provider.read([resource])[resource.address]

    assert live.health is Health.HEALTHY and live.error is None
    assert live.state["power"] == "On"
    assert (live.state["boot.source"], live.state["boot.mode"]) == ("Hdd", "Continuous")
    assert bios(live, "ProcTurboMode") == "Disabled"  # declared by the lab system
    assert bios(live, "NumaNodesPerSocket") == 2
    assert bios(live, "WorkloadProfile") == "Balanced"  # the registry default
    assert live.pending == {}
    assert live.facts["manufacturer"] == "Dell Inc."
    assert live.facts["model"] == "PowerEdge R760"
    assert live.facts["systemId"] == READ_ONLY_SYSTEM
    assert provider.endpoint(resource) == f"redfish:{redfish_peer.url}"
    assert isinstance(provider, Provider)


@peer_test
def test_registry_facts_carry_types_allowed_values_bounds_and_read_only(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("registry", redfish_peer.url, READ_ONLY_SYSTEM)
    registry = provider.read_one(resource).facts["biosRegistry"]

    assert registry["ProcTurboMode"] == {
        "type": "Enumeration",
        "readOnly": False,
        "allowedValues": ["Enabled", "Disabled"],
        "lowerBound": None,
        "upperBound": None,
    }
    assert registry["NumaNodesPerSocket"]["type"] == "Integer"
    numa = registry["NumaNodesPerSocket"]
    assert (numa["lowerBound"], numa["upperBound"]) == (1, 4)
    assert registry["ProcCoreCount"]["readOnly"] is True
    assert registry["AssetTag"]["type"] == "String"


@peer_test
def test_bios_staged_by_hand_reads_as_pending_not_current(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("stage", redfish_peer.url, "rf-stage")
    # LogicalProc is staged at the value already in effect: that is not a pending change.
    redfish_peer.stage_bios(
        "rf-stage", {"ProcTurboMode": "Disabled", "NumaNodesPerSocket": 3, "LogicalProc": "Enabled"}
    )
    live = provider.read_one(resource)

    assert live.pending == {
        "bios.attributes.ProcTurboMode": "Disabled",
        "bios.attributes.NumaNodesPerSocket": 3,
    }
    assert bios(live, "ProcTurboMode") == "Enabled"
    assert live.effective("bios.attributes.ProcTurboMode") == "Disabled"
    assert live.facts["manufacturer"] == "Supermicro"


@peer_test
def test_one_session_and_one_registry_fetch_per_bmc(redfish_peer: RedfishPeer) -> None:
    provider = RedfishProvider(make_context())
    resources = [server(f"s{i}", redfish_peer.url, READ_ONLY_SYSTEM) for i in range(6)]
    try:
        redfish_peer.reset_stats()
        first = provider.read(resources)
        cold = redfish_peer.stats()["requests"]
        redfish_peer.reset_stats()
        provider.read(resources)
        warm = redfish_peer.stats()["requests"]
    finally:
        provider.close()

    assert all(live.reachable for live in first.values())
    assert all("biosRegistry" in live.facts for live in first.values())
    # System, Bios and its Settings per server; the service root and the registry once.
    assert warm == 3 * len(resources)
    assert cold <= 3 * len(resources) + 5


@peer_test
def test_at_most_four_requests_in_flight_per_bmc_with_50_concurrent_reads(
    redfish_peer: RedfishPeer,
) -> None:
    provider = RedfishProvider(make_context(parallelism=50, per_endpoint=4))
    resources = [server(f"c{i}", redfish_peer.url, READ_ONLY_SYSTEM) for i in range(50)]
    try:
        redfish_peer.reset_stats()
        live = provider.read(resources)
        stats = redfish_peer.stats()
    finally:
        provider.close()

    assert len(live) == 50 and all(r.health is Health.HEALTHY for r in live.values())
    assert stats["requests"] >= 150
    # The limit is the property: never more than 4 at once on one BMC. How many the emulator
    # sees together depends on the machine's load (a fast emulator on a busy machine may
    # serialize them), so the lower bound only says the reads reached it.
    assert 1 <= stats["maxInFlight"] <= 4


# -- actions -------------------------------------------------------------------------------


@peer_test
def test_bios_set_stages_values_and_a_restart_applies_them(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("bios", redfish_peer.url, "rf-bios")
    attributes = {"ProcTurboMode": "Disabled", "PowerCapWatts": 1200}

    staged = provider.execute(act(resource, "bios.set", attributes=attributes), resource)
    assert staged.pending == {
        "bios.attributes.ProcTurboMode": "Disabled",
        "bios.attributes.PowerCapWatts": 1200,
    }
    assert bios(staged, "ProcTurboMode") == "Enabled"

    rebooted = provider.execute(act(resource, "power.reset"), resource)
    assert rebooted.state["power"] == "On"
    assert rebooted.pending == {}
    assert (bios(rebooted, "ProcTurboMode"), bios(rebooted, "PowerCapWatts")) == ("Disabled", 1200)


@peer_test
def test_bios_value_refused_by_the_bmc_is_a_permanent_error(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("bios-bad", redfish_peer.url, "rf-stage")
    with pytest.raises(PermanentError, match="upper bound 4") as caught:
        provider.execute(act(resource, "bios.set", attributes={"NumaNodesPerSocket": 9}), resource)
    assert "HTTP 400" in str(caught.value)
    with pytest.raises(PermanentError, match=r"params\.attributes"):
        provider.execute(act(resource, "bios.set", attributes="ProcTurboMode"), resource)


@peer_test
def test_power_off_and_on_wait_until_the_bmc_reports_the_state(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("power", redfish_peer.url, "rf-power")

    off = provider.execute(act(resource, "power.off", force=True), resource)
    assert off.state["power"] == "Off"
    on = provider.execute(act(resource, "power.on"), resource)
    assert on.state["power"] == "On"
    # Already on: nothing to do, and still On.
    assert provider.execute(act(resource, "power.on"), resource).state["power"] == "On"


@peer_test
def test_graceful_power_off_falls_back_to_force_when_ignored(
    redfish_peer: RedfishPeer,
) -> None:
    provider = RedfishProvider(make_context(extra={"redfish.gracefulTimeout": 0.6}))
    resource = server("graceful", redfish_peer.url, "rf-graceful")
    try:
        with redfish_peer.fault("rf-graceful", FaultKind.NO_GRACEFUL):
            started = time.monotonic()
            off = provider.execute(act(resource, "power.off"), resource)
            took = time.monotonic() - started
        assert off.state["power"] == "Off"
        assert took >= 0.6  # it waited for the graceful shutdown before forcing

        provider.execute(act(resource, "power.on"), resource)
        started = time.monotonic()
        assert provider.execute(act(resource, "power.off"), resource).state["power"] == "Off"
        assert time.monotonic() - started < 0.6  # an honoured shutdown needs no fallback
    finally:
        provider.close()


@peer_test
def test_power_reset_of_a_system_that_is_off_boots_it_with_staged_bios(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("off", redfish_peer.url, "rf-off")
    redfish_peer.stage_bios("rf-off", {"SriovGlobalEnable": "Enabled"})
    assert provider.read_one(resource).state["power"] == "Off"

    live = provider.execute(act(resource, "power.reset"), resource)
    assert live.state["power"] == "On"
    assert bios(live, "SriovGlobalEnable") == "Enabled" and live.pending == {}


@peer_test
def test_boot_override_once_continuous_and_none(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("boot", redfish_peer.url, "rf-boot")

    once = provider.execute(act(resource, "boot.set", source="Pxe", mode="Once"), resource)
    assert (once.state["boot.source"], once.state["boot.mode"]) == ("Pxe", "Once")
    # A one-time override is used up by the next boot.
    after = provider.execute(act(resource, "power.reset", force=True), resource)
    assert after.state["boot.source"] == "None"

    cd = provider.execute(act(resource, "boot.set", source="Cd", mode="Continuous"), resource)
    assert (cd.state["boot.source"], cd.state["boot.mode"]) == ("Cd", "Continuous")
    bios_setup = provider.execute(act(resource, "boot.set", source="BiosSetup"), resource)
    assert bios_setup.state["boot.source"] == "BiosSetup"
    none = provider.execute(act(resource, "boot.set", source="None"), resource)
    assert (none.state["boot.source"], none.state["boot.mode"]) == ("None", "Continuous")
    with pytest.raises(PermanentError, match=r"boot\.set needs"):
        provider.execute(act(resource, "boot.set", source="Floppy"), resource)


@peer_test
def test_unsupported_operation_is_a_permanent_error(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    resource = server("unsupported", redfish_peer.url, READ_ONLY_SYSTEM)
    with pytest.raises(PermanentError, match=r"cannot perform 'virtualMedia\.insert'"):
        provider.execute(act(resource, "virtualMedia.insert"), resource)


# -- failures ------------------------------------------------------------------------------


@peer_test
def test_wrong_password_is_a_clear_authentication_failure_without_secrets(
    redfish_peer: RedfishPeer, provider: RedfishProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = server("wrong", redfish_peer.url, READ_ONLY_SYSTEM, credential=WRONG_CREDENTIAL)
    right = server("right", redfish_peer.url, READ_ONLY_SYSTEM)
    live = provider.read([wrong, right])

    assert live[wrong.address].health is Health.UNREACHABLE
    error = live[wrong.address].error or ""
    assert "authentication failed" in error and WRONG_CREDENTIAL in error and "HTTP 401" in error
    assert live[right.address].health is Health.HEALTHY
    for text in (error, caplog.text):
        assert WRONG_PASSWORD not in text and LAB_PASSWORD not in text
    assert "Traceback" not in error


@peer_test
def test_a_refused_credential_is_not_tried_again_for_every_server(
    redfish_peer: RedfishPeer,
) -> None:
    # BMCs lock accounts after a few failed logins: 20 servers must not mean 20 attempts.
    provider = RedfishProvider(make_context(parallelism=4))
    resources = [
        server(f"w{i}", redfish_peer.url, READ_ONLY_SYSTEM, credential=WRONG_CREDENTIAL)
        for i in range(20)
    ]
    try:
        redfish_peer.reset_stats()
        live = provider.read(resources)
        requests = redfish_peer.stats()["requests"]
    finally:
        provider.close()

    assert all("authentication failed" in (r.error or "") for r in live.values())
    assert requests <= 1 + 4  # the service root, then at most one refused GET per worker


@peer_test
def test_http_500_reads_unreachable_naming_the_status(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    faulty = server("faulty", redfish_peer.url, "rf-faulty")
    healthy = server("healthy", redfish_peer.url, READ_ONLY_SYSTEM)
    with redfish_peer.fault("rf-faulty", FaultKind.ERROR):
        live = provider.read([faulty, healthy])

    assert live[faulty.address].health is Health.UNREACHABLE
    assert "HTTP 500" in (live[faulty.address].error or "")
    assert live[healthy.address].health is Health.HEALTHY
    assert provider.read_one(faulty).state["power"] == "On"  # fault cleared: readable again


@peer_test
def test_a_hanging_bmc_times_out_and_says_so(redfish_peer: RedfishPeer) -> None:
    provider = RedfishProvider(make_context(timeout=0.5, retries=0))
    resource = server("hang", redfish_peer.url, "rf-hang")
    try:
        with redfish_peer.fault("rf-hang", FaultKind.HANG):
            started = time.monotonic()
            live = provider.read([resource])[resource.address]
            took = time.monotonic() - started
    finally:
        provider.close()

    assert live.health is Health.UNREACHABLE
    assert "timeout" in (live.error or "") and "0.5s" in (live.error or "")
    assert took < 5


@peer_test
def test_unknown_credential_and_system_errors_are_clear(
    redfish_peer: RedfishPeer, provider: RedfishProvider
) -> None:
    no_credential = server("nocred", redfish_peer.url, READ_ONLY_SYSTEM, credential="missing")
    no_system = server("nosys", redfish_peer.url, "no-such-system")
    ambiguous = server("ambiguous", redfish_peer.url, None)
    live = provider.read([no_credential, no_system, ambiguous])

    assert "Credential/missing" in (live[no_credential.address].error or "")
    assert "no system 'no-such-system'" in (live[no_system.address].error or "")
    assert "set bmc.systemId" in (live[ambiguous.address].error or "")
    assert all(r.health is Health.UNREACHABLE for r in live.values())


@peer_test
def test_a_bmc_with_one_system_needs_no_system_id(tmp_path: Path) -> None:
    peer = start_peer(tmp_path, [LabSystem("only", model="MF-1", power_state="On")])
    provider = RedfishProvider(make_context())
    try:
        live = provider.read_one(server("only", peer.url + "/redfish/v1/", None))
        assert live.facts["systemId"] == "only" and live.facts["model"] == "MF-1"
    finally:
        provider.close()
        peer.stop()


@peer_test
def test_a_dead_bmc_is_unreachable_and_a_restart_keeps_its_state(tmp_path: Path) -> None:
    peer = start_peer(tmp_path / "bmc", [LabSystem("mortal", power_state="On")])
    provider = RedfishProvider(make_context())
    resource = server("mortal", peer.url, "mortal")
    try:
        provider.execute(
            act(resource, "bios.set", attributes={"LogicalProc": "Disabled"}), resource
        )
        peer.kill()  # the BMC dies mid-apply
        assert not peer.is_running()

        dead = provider.read([resource])[resource.address]
        assert dead.health is Health.UNREACHABLE
        assert "connection refused" in (dead.error or "")
        with pytest.raises(ProviderError, match="connection refused"):
            provider.execute(act(resource, "power.reset"), resource)

        peer.start()  # same state directory: the staged value is still pending
        back = RedfishProvider(make_context())
        try:
            assert back.read_one(server("mortal", peer.url, "mortal")).pending == {
                "bios.attributes.LogicalProc": "Disabled"
            }
        finally:
            back.close()
        # Another process stops it from the state directory alone.
        RedfishPeer.attach(tmp_path / "bmc").stop()
        deadline = time.monotonic() + 2  # this process, its parent, sees the exit a bit later
        while peer.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not peer.is_running()
    finally:
        provider.close()
        peer.stop()


# -- the lab BMC itself --------------------------------------------------------------------


@peer_test
def test_lab_system_shows_manufacturer_model_and_refuses_bad_bios(
    redfish_peer: RedfishPeer,
) -> None:
    doc = redfish_peer.system_document(READ_ONLY_SYSTEM)
    assert (doc["Manufacturer"], doc["Model"]) == ("Dell Inc.", "PowerEdge R760")
    assert doc["Boot"]["BootSourceOverrideEnabled"] == "Continuous"
    with pytest.raises(PeerError, match="HTTP 400"):
        redfish_peer.stage_bios(READ_ONLY_SYSTEM, {"ProcCoreCount": 8})  # read-only
    with pytest.raises(ValueError, match="loopback"):
        RedfishPeer(Path("unused"), [], host="0.0.0.0")


@peer_test
def test_lab_start_failure_is_an_error_with_the_emulator_log(
    redfish_peer: RedfishPeer, tmp_path: Path
) -> None:
    busy = RedfishPeer(tmp_path / "busy", [LabSystem("x")], port=redfish_peer.port, password="p")
    with pytest.raises(PeerError, match="exited") as caught:
        busy.start()
    assert "address already in use" in str(caught.value).lower()
    assert not busy.is_running()
    with pytest.raises(PeerError, match="no Redfish lab"):
        RedfishPeer.attach(tmp_path / "nothing-here")


# -- pure mappings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("On", ("On", False)),
        ("Off", ("Off", False)),
        ("PoweringOn", ("On", True)),
        ("PoweringOff", ("Off", True)),
        ("Paused", ("On", False)),
        (None, (None, False)),
        ("Exploded", (None, False)),
    ],
)
def test_power_state_mapping(raw: str | None, expected: tuple[str | None, bool]) -> None:
    assert mapping.power_state(raw) == expected


def test_health_mapping() -> None:
    assert mapping.health("OK", False) is Health.HEALTHY
    assert mapping.health(None, False) is Health.HEALTHY
    assert mapping.health("Critical", False) is Health.DEGRADED
    assert mapping.health("OK", True) is Health.PROGRESSING


@pytest.mark.parametrize(
    ("target", "enabled", "source", "mode"),
    [
        ("Pxe", "Once", "Pxe", "Once"),
        ("Hdd", "Continuous", "Hdd", "Continuous"),
        ("Pxe", "Disabled", "None", "Continuous"),
        (None, None, "None", "Continuous"),
        ("UefiHttp", "Continuous", "UefiHttp", "Continuous"),
    ],
)
def test_boot_state_mapping(
    target: str | None, enabled: str | None, source: str, mode: str
) -> None:
    assert mapping.boot_state(target, enabled) == {"boot.source": source, "boot.mode": mode}


def test_boot_request_mapping() -> None:
    assert mapping.boot_request("Pxe", "Once") == ("Pxe", "Once")
    assert mapping.boot_request("BiosSetup") == ("BiosSetup", "Continuous")
    assert mapping.boot_request("None", "Once") == ("None", "Disabled")
    with pytest.raises(ValueError):
        mapping.boot_request("Floppy")


def test_bios_mappings() -> None:
    current = {"A": "Enabled", "B": 1}
    assert mapping.bios_state(current) == {"bios.attributes.A": "Enabled", "bios.attributes.B": 1}
    # A BMC that lists every attribute as pending: only real changes count.
    assert mapping.bios_pending(current, {"A": "Enabled", "B": 2, "C": "x"}) == {
        "bios.attributes.B": 2,
        "bios.attributes.C": "x",
    }
    assert mapping.bios_pending(current, None) == {}
    assert mapping.bios_patch({"attributes": {"A": "Disabled"}}) == {"A": "Disabled"}
    with pytest.raises(ValueError):
        mapping.bios_patch({})


def test_registry_facts_mapping() -> None:
    facts = mapping.registry_facts(
        [
            {"AttributeName": "Mode", "Type": "Enumeration", "Value": [{"ValueName": "X"}]},
            {"AttributeName": "Count", "Type": "Integer", "LowerBound": 0, "UpperBound": 9},
            {"AttributeName": "Serial", "Type": "String", "Immutable": True},
            {"Type": "Integer"},  # nameless entries are skipped
        ]
    )
    assert facts["Mode"]["allowedValues"] == ["X"] and facts["Mode"]["readOnly"] is False
    assert (facts["Count"]["lowerBound"], facts["Count"]["upperBound"]) == (0, 9)
    assert facts["Count"]["allowedValues"] is None
    assert facts["Serial"]["readOnly"] is True
    assert set(facts) == {"Mode", "Count", "Serial"}


def test_reset_type_falls_back_to_what_the_bmc_offers() -> None:
    assert (
        mapping.reset_type("GracefulRestart", {"GracefulRestart", "ForceRestart"})
        == "GracefulRestart"
    )
    assert mapping.reset_type("GracefulRestart", {"On", "ForceRestart"}) == "ForceRestart"
    assert mapping.reset_type("GracefulShutdown", {"ForceOff"}) == "ForceOff"
    assert mapping.reset_type("On", None) == "On"


def test_base_url_and_endpoint_normalisation() -> None:
    assert base_url("HTTPS://BMC.example:8443/redfish/v1/") == "https://bmc.example:8443"
    assert endpoint_of("http://127.0.0.1:8000/") == "redfish:http://127.0.0.1:8000"
    with pytest.raises(PermanentError, match="not an http"):
        base_url("127.0.0.1:623")
    with pytest.raises(PermanentError, match="user name or password"):
        base_url("https://admin:hunter2@bmc.example")
