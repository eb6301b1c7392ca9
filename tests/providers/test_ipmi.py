"""The IPMI provider, against real `ipmi_sim` BMCs on loopback, and its pure mapping."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyghmi import exceptions as pyghmi_exc

from metalform.lab import ipmi_chassis
from metalform.lab.ipmi import BmcSpec, IpmiPeer, IpmiSimNotInstalled, free_udp_port, rmcp_ping
from providers.ipmi import IpmiProvider, mapping
from providers.ipmi.client import LOGOUT_TIMEOUT, BmcTarget, IpmiClient, _Session, classify
from reconciler.concurrency import Limiter
from reconciler.errors import (
    AuthenticationError,
    PermanentError,
    TemporaryError,
    UnreachableError,
)
from reconciler.model import Action, Health, Resource
from reconciler.model.hardware import BootSource
from reconciler.provider import Provider
from reconciler.secrets import ResolvedCredential, Secret
from tests.fixtures.ipmi import (
    IPMI_BMCS,
    IPMI_PASSWORD,
    IPMI_SOFT_OFF_DELAY,
    IPMI_USERNAME,
    ipmi_context,
    ipmi_server,
)

peer = pytest.mark.peer


def action(address: str, operation: str, **params: object) -> Action:
    return Action(id=1, address=address, operation=operation, params=params)


# -- mapping: addresses ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5", ("10.0.0.5", 623)),
        ("10.0.0.5:6230", ("10.0.0.5", 6230)),
        (" bmc-01.example.net:623 ", ("bmc-01.example.net", 623)),
        ("[fe80::1]:700", ("fe80::1", 700)),
        ("[fe80::1]", ("fe80::1", 623)),
        ("fe80::1", ("fe80::1", 623)),
    ],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    assert mapping.parse_address(address) == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("", "empty"),
        ("https://10.0.0.5", "not a URL"),
        ("10.0.0.5:0", "not in 1..65535"),
        ("10.0.0.5:70000", "not in 1..65535"),
        ("10.0.0.5:ipmi", "not in 1..65535"),
        (":623", "no host"),
        ("[fe80::1", "unclosed"),
        ("[fe80::1]623", "after ']'"),
    ],
)
def test_parse_address_rejects(address: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mapping.parse_address(address)


def test_endpoint_names_host_and_port() -> None:
    assert mapping.endpoint("10.0.0.5", 623) == "ipmi:10.0.0.5:623"
    assert mapping.endpoint("fe80::1", 623) == "ipmi:[fe80::1]:623"


# -- mapping: chassis status, boot flags, device id -------------------------------------------


@pytest.mark.parametrize(
    ("data", "power", "problems", "policy"),
    [
        (b"\x00\x00\x00", "Off", [], "AlwaysOff"),
        (b"\x01\x00\x00", "On", [], "AlwaysOff"),
        (b"\x21\x00\x00\x00", "On", [], "Previous"),
        (b"\x41\x00\x00", "On", [], "AlwaysOn"),
        (b"\x09\x00\x00", "On", ["power fault"], "AlwaysOff"),
        (
            b"\x16\x00\x00",
            "Off",
            ["power overload", "interlock active", "power control fault"],
            "AlwaysOff",
        ),
    ],
)
def test_chassis_status(data: bytes, power: str, problems: list[str], policy: str) -> None:
    status = mapping.ChassisStatus.parse(data)
    assert status.power.value == power
    assert status.problems == problems
    assert status.restore_policy == policy
    assert mapping.health(status) is (Health.DEGRADED if problems else Health.HEALTHY)


def test_chassis_status_too_short() -> None:
    with pytest.raises(ValueError, match="2 bytes"):
        mapping.ChassisStatus.parse(b"\x01\x00")


@pytest.mark.parametrize(
    ("data", "state", "device"),
    [
        # ipmi_sim after `set_bootdev("network")`: selector kept, valid bit never set.
        (b"\x01\x05\x00\x04\x00\x00\x00", {}, "Pxe"),
        # No override at all.
        (b"\x01\x05\x00\x00\x00\x00\x00", {"boot.source": "None"}, "None"),
        (b"\x01\x05\xc0\x04\x00\x00\x00", {"boot.source": "Pxe", "boot.mode": "Continuous"}, "Pxe"),
        (b"\x01\x05\x80\x08\x00\x00\x00", {"boot.source": "Hdd", "boot.mode": "Once"}, "Hdd"),
        (b"\x01\x05\xe0\x14\x00\x00\x00", {"boot.source": "Cd", "boot.mode": "Continuous"}, "Cd"),
        (
            b"\x01\x05\x80\x18\x00\x00\x00",
            {"boot.source": "BiosSetup", "boot.mode": "Once"},
            "BiosSetup",
        ),
        # Valid, but a device Metalform has no name for: the mode only.
        (b"\x01\x05\xc0\x3c\x00\x00\x00", {"boot.mode": "Continuous"}, "Floppy"),
        # Parameter marked invalid/locked: the flags are not in force.
        (b"\x01\x85\xc0\x04\x00\x00\x00", {}, "Pxe"),
    ],
)
def test_boot_flags_are_read_honestly(data: bytes, state: dict[str, str], device: str) -> None:
    flags = mapping.BootFlags.parse(data)
    assert mapping.boot_state(flags) == state
    status = mapping.ChassisStatus.parse(b"\x00\x00\x00")
    assert mapping.live_state(status, flags) == {"power": "Off", **state}
    assert mapping.live_facts(status, flags, None)["bootOverride"]["device"] == device


def test_boot_flags_read_back_right_after_a_boot_set() -> None:
    # Valid bit clear, selector PXE: unknown in general, but right after writing PXE it is ours.
    flags = mapping.BootFlags.parse(b"\x01\x05\x00\x04\x00\x00\x00")
    assert mapping.boot_state(flags) == {}
    assert mapping.boot_state(flags, just_set=BootSource.PXE) == {"boot.source": "Pxe"}
    assert mapping.boot_state(flags, just_set=BootSource.HDD) == {}  # not what was written
    # A BMC that keeps the flags reports the mode too, with or without just_set.
    valid = mapping.BootFlags.parse(b"\x01\x05\xc0\x04\x00\x00\x00")
    expected = {"boot.source": "Pxe", "boot.mode": "Continuous"}
    assert mapping.boot_state(valid, just_set=BootSource.PXE) == expected


def test_boot_flags_of_another_parameter_are_refused() -> None:
    with pytest.raises(ValueError, match="parameter 4"):
        mapping.BootFlags.parse(b"\x01\x04\x00\x00\x00")


def test_device_id() -> None:
    # What ipmi_sim answers for the lab's sim.emu.
    sim = mapping.DeviceId.parse(bytes.fromhex("000309 08 02 9f 911200 020f 00000000"))
    assert (sim.manufacturer_id, sim.product_id) == (4753, 0x0F02)
    assert (sim.firmware, sim.ipmi_version) == ("9.08", "2.0")
    # An IPMI 1.5 BMC of another maker, firmware 1.23.
    dell = mapping.DeviceId.parse(
        bytes([0x20, 0x81, 0x01, 0x23, 0x51, 0xBF, 0xA2, 0x02, 0x00, 0x00, 0x01])
    )
    assert (dell.manufacturer_id, dell.firmware, dell.ipmi_version) == (674, "1.23", "1.5")
    facts = mapping.live_facts(mapping.ChassisStatus.parse(b"\x01\x00\x00"), None, dell)
    assert facts["manufacturer"] == "Dell"
    assert "bootOverride" not in facts
    with pytest.raises(ValueError, match="at least 11"):
        mapping.DeviceId.parse(b"\x00\x01")


# -- mapping: requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"source": "Pxe", "mode": "Once"}, ("Pxe", False)),
        ({"source": "Hdd", "mode": "Continuous"}, ("Hdd", True)),
        ({"source": "BiosSetup"}, ("BiosSetup", True)),
        ({"source": "None", "mode": "Once"}, ("None", False)),
    ],
)
def test_boot_request(params: dict[str, str], expected: tuple[str, bool]) -> None:
    source, persistent = mapping.boot_request(params)
    assert (source.value, persistent) == expected
    assert source in mapping.PYGHMI_BOOT_DEVICES


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "needs a source"),
        ({"source": "Usb"}, "'Usb' is not one of"),
        ({"source": "Pxe", "mode": "Always"}, "'Always' is not one of"),
    ],
)
def test_boot_request_rejects(params: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mapping.boot_request(params)


def test_power_request() -> None:
    control = mapping.ChassisControl
    assert mapping.power_request("power.on", {}) == (control.POWER_ON, "On")
    assert mapping.power_request("power.off", {}) == (control.SOFT_OFF, "Off")
    assert mapping.power_request("power.off", {"force": True}) == (control.POWER_OFF, "Off")
    assert mapping.power_request("power.reset", {}) == (control.HARD_RESET, "On")
    with pytest.raises(ValueError, match="force must be true or false"):
        mapping.power_request("power.off", {"force": "yes"})
    with pytest.raises(ValueError, match="not a power operation"):
        mapping.power_request("boot.set", {})


# -- client: error classification -------------------------------------------------------------

TARGET = BmcTarget("10.0.0.9", 623, ResolvedCredential("bmc-x", "root", Secret("hunter2-x")))


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (
            pyghmi_exc.IpmiException("Incorrect password provided"),
            AuthenticationError,
            "ipmi:10.0.0.9:623 refused the credentials of bmc-x: Incorrect password provided",
        ),
        (
            pyghmi_exc.IpmiException("Unauthorized name in RAKP2"),
            AuthenticationError,
            "Unauthorized name",
        ),
        (
            pyghmi_exc.IpmiException(None),
            UnreachableError,
            "ipmi:10.0.0.9:623 did not answer: no answer to IPMI (timed out)",
        ),
        (
            pyghmi_exc.IpmiException("Session no longer connected"),
            UnreachableError,
            "did not answer",
        ),
        (
            pyghmi_exc.IpmiException("Insufficient resources to create new session"),
            TemporaryError,
            "is busy",
        ),
        (pyghmi_exc.IpmiException("Node busy", 0xC0), TemporaryError, "node busy (0xC0)"),
        (
            pyghmi_exc.IpmiException("Unspecified", 0xFF),
            PermanentError,
            "read x failed: the BMC answered Unspecified (completion code 0xFF)",
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            UnreachableError,
            "cannot resolve host 10.0.0.9",
        ),
        (
            struct.error("unpack requires a buffer of 4 bytes"),
            PermanentError,
            "failed in the IPMI client: error: unpack requires",
        ),
    ],
)
def test_classify(exc: BaseException, kind: type, text: str) -> None:
    error = classify(exc, TARGET, "read x")
    assert type(error) is kind
    assert text in str(error)
    assert "hunter2" not in str(error)


def test_classify_redacts_a_secret_echoed_by_the_library() -> None:
    from reconciler.secrets import REDACTOR

    REDACTOR.add("hunter2-x")
    error = classify(RuntimeError("login as root/hunter2-x failed"), TARGET, "login")
    assert "hunter2" not in str(error)
    assert "(sensitive)" in str(error)


# -- the chassis program and the lab's own checks ---------------------------------------------


def chassis(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(directory / ipmi_chassis.SCRIPT_NAME), "0x20", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_chassis_program_speaks_ipmi_sims_protocol(tmp_path: Path) -> None:
    ipmi_chassis.write_script(tmp_path)
    assert chassis(tmp_path, "get", "power", "boot").stdout == "power:0\nboot:none\n"
    assert chassis(tmp_path, "set", "power", "1").returncode == 0
    assert chassis(tmp_path, "set", "boot", "pxe").returncode == 0
    assert chassis(tmp_path, "set", "identify", "15 0").returncode == 0
    assert chassis(tmp_path, "get", "power", "boot").stdout == "power:1\nboot:pxe\n"
    assert chassis(tmp_path, "set", "reset", "1").returncode == 0
    state = ipmi_chassis.load(tmp_path)
    assert (state["resets"], state["power_ons"], state["last_boot"]) == (1, 1, "pxe")
    assert state["last_request"] == "reset-1"
    for args, message in [
        (("set", "boot", "floppy"), "Invalid boot value: floppy"),
        (("set", "power", "2"), "Invalid power value: 2"),
        (("set", "power"), "No value present for parameter power"),
        (("get", "fan"), "Invalid parameter: fan"),
        (("check", "power", "1"), "Unknown operation: check"),
    ]:
        result = chassis(tmp_path, *args)
        assert (result.returncode, result.stdout.strip()) == (1, message)


def test_chassis_soft_off_completes_after_its_delay(tmp_path: Path) -> None:
    ipmi_chassis.write_script(tmp_path)
    state = ipmi_chassis.load(tmp_path)
    ipmi_chassis.save(tmp_path, {**state, "power": 1, "soft_off_delay_ms": 200})
    assert chassis(tmp_path, "set", "shutdown", "1").returncode == 0
    assert chassis(tmp_path, "get", "power").stdout == "power:1\n"
    pending = ipmi_chassis.load(tmp_path)
    due = int(pending["soft_off_at"])
    assert due > time.time() * 1000  # pending, not done
    assert ipmi_chassis.settle(pending, due / 1000 - 0.01)["power"] == 1
    assert ipmi_chassis.settle(pending, due / 1000)["power"] == 0
    time.sleep(0.25)
    assert chassis(tmp_path, "get", "power").stdout == "power:0\n"
    # A host that is off has nothing to reset.
    result = chassis(tmp_path, "set", "reset", "1")
    assert (result.returncode, result.stdout.strip()) == (
        1,
        "chassis is powered off; nothing to reset",
    )


def test_lab_refuses_what_it_cannot_serve_safely(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        IpmiPeer(tmp_path, ["a"], host="0.0.0.0", password="pw")
    with pytest.raises(ValueError, match="password"):
        IpmiPeer(tmp_path, ["a"], password='with"quote')
    with pytest.raises(ValueError, match="password"):
        IpmiPeer(tmp_path, ["a"], password="x" * 21)
    with pytest.raises(ValueError, match="unique"):
        IpmiPeer(tmp_path, ["a", "a"], password="pw")
    with pytest.raises(ValueError, match="power must be On or Off"):
        IpmiPeer(tmp_path, [BmcSpec("a", power="on")], password="pw")


def test_lab_without_ipmi_sim_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(IpmiSimNotInstalled, match=r"apt-get install openipmi"):
        IpmiPeer(tmp_path / "lab", ["a"], password="pw").start()
    assert not (tmp_path / "lab" / "a").exists()


# -- provider: no BMC needed ------------------------------------------------------------------


def test_closing_with_every_logout_stuck_takes_one_logout_timeout_not_one_each() -> None:
    """BMCs that stopped answering never answer the logout: close() gives up on all at once."""

    class Stuck:
        def logout(self) -> None:
            threading.Event().wait(60)  # pyghmi waiting for an answer that never comes

    class Command:
        ipmi_session = Stuck()

    client = IpmiClient(timeout=1.0)
    for n in range(20):
        client._sessions[("10.0.0.1", 623 + n, "admin", "x")] = _Session(command=Command())
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 3 * LOGOUT_TIMEOUT  # 20 x LOGOUT_TIMEOUT before


def test_provider_shape() -> None:
    provider = IpmiProvider(ipmi_context())
    assert isinstance(provider, Provider)
    assert provider.name == "ipmi"
    assert provider.kinds == {"Server"}
    assert provider.operations == {
        "power.on",
        "power.off",
        "power.reset",
        "boot.set",
        "account.create",
        "account.set",
        "account.disable",
        "account.rotate",
    }
    assert provider.endpoint(ipmi_server("n1", "10.1.2.3")) == "ipmi:10.1.2.3:623"
    assert provider.endpoint(ipmi_server("n1", "10.1.2.3:6230")) == "ipmi:10.1.2.3:6230"


def test_unsupported_operation_is_refused_by_name() -> None:
    provider = IpmiProvider(ipmi_context())
    server = ipmi_server("n1", "127.0.0.1:9")
    with pytest.raises(PermanentError, match=r"cannot perform 'bios\.set' on Server/n1"):
        provider.execute(action(server.address, "bios.set", ProcTurboMode="Disabled"), server)


def test_configuration_errors_read_as_unreachable_with_the_reason() -> None:
    context = ipmi_context({"token-only": (None, "tok-123456")})
    provider = IpmiProvider(context)
    servers = [
        ipmi_server("bad-address", "127.0.0.1:99999"),
        ipmi_server("unknown-cred", "127.0.0.1:9", credential="nope"),
        ipmi_server("token-cred", "127.0.0.1:9", credential="token-only"),
    ]
    live = provider.read(servers)
    assert {a: r.health for a, r in live.items()} == {
        s.address: Health.UNREACHABLE for s in servers
    }
    assert "bmc.address: port '99999'" in (live["Server/bad-address"].error or "")
    assert "credential nope: no Credential named nope" in (live["Server/unknown-cred"].error or "")
    assert "has no username" in (live["Server/token-cred"].error or "")
    assert all("tok-123456" not in (r.error or "") for r in live.values())


# -- provider against the simulator -----------------------------------------------------------


class RecordingLimiter(Limiter):
    """A Limiter that remembers which endpoints got request slots, and how many at once."""

    def __init__(self) -> None:
        super().__init__(parallelism=8)
        self.requests: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self._active: Counter[str] = Counter()
        self._record = threading.Lock()

    @contextmanager
    def slot(self, endpoint: str) -> Iterator[None]:
        with super().slot(endpoint):
            with self._record:
                self.requests[endpoint] += 1
                self._active[endpoint] += 1
                self.most_at_once[endpoint] = max(
                    self.most_at_once[endpoint], self._active[endpoint]
                )
            try:
                yield
            finally:
                with self._record:
                    self._active[endpoint] -= 1


@peer
def test_lab_peer_can_be_attached_from_its_state_dir(ipmi_peer: IpmiPeer) -> None:
    attached = IpmiPeer.attach(ipmi_peer.state_dir)
    assert attached.addresses == ipmi_peer.addresses
    assert attached.is_running()
    assert attached.pids() == ipmi_peer.pids()
    assert all(addr.startswith("127.0.0.1:") for addr in ipmi_peer.addresses.values())
    rows = attached.status()
    assert [row["name"] for row in rows] == list(IPMI_BMCS)
    assert all(row["answering"] for row in rows)
    assert ipmi_peer.startup_seconds is not None and ipmi_peer.startup_seconds < 5
    conf = ipmi_peer.bmc_dir(IPMI_BMCS[0]) / "lan.conf"
    assert conf.stat().st_mode & 0o077 == 0  # holds the password: owner only


@peer
def test_read_reports_power_boot_and_facts(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource]
) -> None:
    ipmi_peer.set_chassis("ipmi-b", power="On")
    limiter = RecordingLimiter()
    provider = IpmiProvider(ipmi_context(limiter=limiter))
    try:
        live = provider.read(list(ipmi_servers.values()))
    finally:
        provider.close()
    assert set(live) == {f"Server/{name}" for name in IPMI_BMCS}
    assert {a: r.state["power"] for a, r in live.items()} == {
        "Server/ipmi-a": "Off",
        "Server/ipmi-b": "On",
        "Server/ipmi-c": "Off",
        "Server/ipmi-d": "Off",
    }
    b = live["Server/ipmi-b"]
    assert b.health is Health.HEALTHY and b.error is None
    assert b.state == {"power": "On", "boot.source": "None", "bmc.login": "current"}
    assert b.facts["manufacturer"] == "MontaVista"
    assert (b.facts["manufacturerId"], b.facts["productId"]) == (4753, 0x0F02)
    assert (b.facts["firmwareVersion"], b.facts["ipmiVersion"]) == ("9.08", "2.0")
    assert b.facts["bootOverride"] == {
        "device": "None",
        "valid": False,
        "persistent": False,
        "uefi": False,
    }
    # Every request held a slot of its own BMC's endpoint, one at a time per BMC.
    endpoints = {provider.endpoint(s) for s in ipmi_servers.values()}
    assert set(limiter.requests) == endpoints
    assert all(limiter.requests[e] >= 3 for e in endpoints)  # status, boot flags, device id
    assert max(limiter.most_at_once.values()) == 1


@peer
def test_power_on_waits_and_reads_back(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    server = ipmi_servers["ipmi-a"]
    live = ipmi_provider.execute(action(server.address, "power.on"), server)
    assert live.address == server.address
    assert live.state["power"] == "On"
    assert ipmi_peer.chassis("ipmi-a")["power"] == "On"
    assert ipmi_peer.chassis("ipmi-a")["powerOns"] == 1
    # Already on: nothing is sent, the host is not powered on a second time.
    again = ipmi_provider.execute(action(server.address, "power.on"), server)
    assert again.state["power"] == "On"
    assert ipmi_peer.chassis("ipmi-a")["powerOns"] == 1


@peer
def test_soft_power_off_waits_for_the_host(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    ipmi_peer.set_chassis("ipmi-a", power="On")
    server = ipmi_servers["ipmi-a"]
    started = time.monotonic()
    live = ipmi_provider.execute(action(server.address, "power.off"), server)
    elapsed = time.monotonic() - started
    assert live.state["power"] == "Off"
    assert ipmi_peer.chassis("ipmi-a")["power"] == "Off"
    assert ipmi_peer.chassis("ipmi-a")["lastRequest"] == "shutdown-1"  # ACPI soft-off
    assert elapsed >= IPMI_SOFT_OFF_DELAY  # it waited for the host to shut down


@peer
def test_forced_power_off_is_immediate(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    ipmi_peer.set_chassis("ipmi-b", power="On")
    server = ipmi_servers["ipmi-b"]
    live = ipmi_provider.execute(action(server.address, "power.off", force=True), server)
    assert live.state["power"] == "Off"
    # A hard power off (chassis control 0), not a soft-off request.
    assert ipmi_peer.chassis("ipmi-b")["lastRequest"] == "power-0"
    assert not ipmi_peer.chassis("ipmi-b")["softOffPending"]


@peer
def test_power_operation_that_does_not_complete_in_time_fails_clearly(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource]
) -> None:
    ipmi_peer.set_chassis("ipmi-c", power="On")
    server = ipmi_servers["ipmi-c"]
    provider = IpmiProvider(ipmi_context(operation_timeout=0.05))
    try:
        with pytest.raises(PermanentError) as raised:
            provider.execute(action(server.address, "power.off"), server)
    finally:
        provider.close()
    assert str(raised.value) == (
        "after power.off, Server/ipmi-c is still On 0.05s later, expected Off"
    )
    assert ipmi_peer.chassis("ipmi-c")["softOffPending"]  # the request did reach the BMC


@peer
def test_reset_restarts_a_running_host_only(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    server = ipmi_servers["ipmi-d"]
    with pytest.raises(PermanentError, match="cannot reset Server/ipmi-d: it is powered off"):
        ipmi_provider.execute(action(server.address, "power.reset"), server)
    assert ipmi_peer.chassis("ipmi-d")["resets"] == 0
    ipmi_peer.set_chassis("ipmi-d", power="On")
    before = ipmi_peer.chassis("ipmi-d")["resets"]
    live = ipmi_provider.execute(action(server.address, "power.reset"), server)
    assert live.state["power"] == "On"
    assert ipmi_peer.chassis("ipmi-d")["resets"] == before + 1


@peer
def test_boot_override_reaches_the_bmc_and_is_read_back_honestly(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    server = ipmi_servers["ipmi-a"]
    live = ipmi_provider.execute(
        action(server.address, "boot.set", source="Pxe", mode="Continuous"), server
    )
    assert ipmi_peer.chassis("ipmi-a")["boot"] == "pxe"
    assert live.facts["bootOverride"] == {
        "device": "Pxe",
        "valid": False,
        "persistent": False,
        "uefi": False,
    }
    # Right after the write, the device the BMC shows is the one just set; ipmi_sim never
    # reports the valid and persistent bits, so the mode stays unknown.
    assert live.state == {"power": "Off", "boot.source": "Pxe", "bmc.login": "current"}
    # Later, whether that override is still in force cannot be told: no boot keys, no guess.
    later = ipmi_provider.read([server])[server.address]
    assert later.state == {"power": "Off", "bmc.login": "current"}
    assert later.facts["bootOverride"]["device"] == "Pxe"

    live = ipmi_provider.execute(
        action(server.address, "boot.set", source="Cd", mode="Once"), server
    )
    assert ipmi_peer.chassis("ipmi-a")["boot"] == "cdrom"
    assert live.state == {"power": "Off", "boot.source": "Cd", "bmc.login": "current"}

    live = ipmi_provider.execute(action(server.address, "boot.set", source="Hdd"), server)
    assert ipmi_peer.chassis("ipmi-a")["boot"] == "default"  # ipmi_sim's name for the disk
    assert live.state == {"power": "Off", "boot.source": "Hdd", "bmc.login": "current"}

    live = ipmi_provider.execute(action(server.address, "boot.set", source="None"), server)
    assert ipmi_peer.chassis("ipmi-a")["boot"] == "none"
    assert live.state == {"power": "Off", "boot.source": "None", "bmc.login": "current"}

    # The device the host starts from follows the override.
    ipmi_provider.execute(action(server.address, "boot.set", source="BiosSetup"), server)
    ipmi_provider.execute(action(server.address, "power.on"), server)
    assert ipmi_peer.chassis("ipmi-a")["lastBootDevice"] == "bios"


@peer
def test_bad_boot_params_are_refused_before_talking_to_the_bmc(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    server = ipmi_servers["ipmi-b"]
    with pytest.raises(PermanentError, match=r"boot\.set on Server/ipmi-b: boot source 'Usb'"):
        ipmi_provider.execute(action(server.address, "boot.set", source="Usb"), server)
    assert ipmi_peer.chassis("ipmi-b")["boot"] == "none"


@peer
@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        (IPMI_USERNAME, "Wrong-password-1", "Incorrect password provided"),
        ("nobody", IPMI_PASSWORD, "Unauthorized name"),
    ],
)
def test_refused_credentials_are_reported_without_the_secret(
    ipmi_peer: IpmiPeer,
    ipmi_servers: dict[str, Resource],
    username: str,
    password: str,
    message: str,
) -> None:
    limiter = RecordingLimiter()
    context = ipmi_context({"bmc-wrong": (username, password)}, retries=2, limiter=limiter)
    provider = IpmiProvider(context)
    server = ipmi_server("ipmi-a", ipmi_peer.addresses["ipmi-a"], credential="bmc-wrong")
    endpoint = provider.endpoint(server)
    try:
        live = provider.read([server])[server.address]
        assert limiter.requests[endpoint] == 1  # refused: not retried although retries=2
        assert live.health is Health.UNREACHABLE
        assert (live.error or "").startswith(
            f"{endpoint} refused the credentials of bmc-wrong: {message}"
        )
        with pytest.raises(AuthenticationError) as raised:
            provider.execute(action(server.address, "power.on"), server)
    finally:
        provider.close()
    for text in (live.error or "", str(raised.value)):
        assert password not in text and "Traceback" not in text
    assert ipmi_peer.chassis("ipmi-a")["power"] == "Off"


@peer
def test_absent_bmcs_are_unreachable_quickly_and_in_parallel() -> None:
    ports = [free_udp_port() for _ in range(3)]
    servers = [ipmi_server(f"absent-{i}", f"127.0.0.1:{port}") for i, port in enumerate(ports)]
    provider = IpmiProvider(ipmi_context(timeout=1.0, retries=0))
    try:
        started = time.monotonic()
        live = provider.read(servers)
        elapsed = time.monotonic() - started
    finally:
        provider.close()
    assert elapsed < 2.5  # three 1 s timeouts side by side, not one after the other
    for server, port in zip(servers, ports, strict=True):
        result = live[server.address]
        assert result.health is Health.UNREACHABLE
        assert result.error == (
            f"ipmi:127.0.0.1:{port} did not answer: no answer to IPMI within 1s "
            "(read the power state)"
        )
        assert result.state == {} and not result.reachable


@peer
def test_bmc_killed_mid_run(ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource]) -> None:
    servers = list(ipmi_servers.values())
    # Healthy requests take milliseconds; pyghmi alone would wait 4.5 s to 25 s for a dead BMC.
    provider = IpmiProvider(ipmi_context(timeout=3.0, retries=0))
    try:
        provider.execute(action("Server/ipmi-c", "power.on"), ipmi_servers["ipmi-c"])
        assert all(r.reachable for r in provider.read(servers).values())

        ipmi_peer.kill("ipmi-c")
        assert not ipmi_peer.is_running("ipmi-c")
        started = time.monotonic()
        live = provider.read(servers)
        assert time.monotonic() - started < 4.5
        dead = live["Server/ipmi-c"]
        assert dead.health is Health.UNREACHABLE
        assert dead.error is not None and "did not answer" in dead.error
        assert dead.error.startswith(provider.endpoint(ipmi_servers["ipmi-c"]))
        assert all(live[s.address].health is Health.HEALTHY for s in servers if s.name != "ipmi-c")
        with pytest.raises(UnreachableError):
            provider.execute(action("Server/ipmi-c", "power.off"), ipmi_servers["ipmi-c"])

        # Back on the same port with the state it had: the next read logs in afresh.
        ipmi_peer.start(["ipmi-c"])
        back = provider.read(servers)["Server/ipmi-c"]
        assert back.health is Health.HEALTHY, back.error
        assert back.state["power"] == "On"
    finally:
        provider.close()


@peer
def test_a_new_provider_logs_in_again_after_another_logged_out(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource]
) -> None:
    # pyghmi 1.6 would hand the second provider the first one's logged-out session.
    server = ipmi_servers["ipmi-d"]
    for power in ("On", "Off", "On"):
        ipmi_peer.set_chassis("ipmi-d", power=power)
        provider = IpmiProvider(ipmi_context())
        try:
            live = provider.read([server])[server.address]
        finally:
            provider.close()
        assert live.health is Health.HEALTHY, live.error
        assert live.state["power"] == power


@peer
def test_one_bmc_used_from_many_threads(
    ipmi_peer: IpmiPeer, ipmi_servers: dict[str, Resource], ipmi_provider: IpmiProvider
) -> None:
    server = ipmi_servers["ipmi-b"]
    results: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            results.append(ipmi_provider.read([server])[server.address].state["power"])
        except BaseException as exc:  # collected: the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    live = ipmi_provider.execute(action(server.address, "power.on"), server)
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(results) == 8 and set(results) <= {"On", "Off"}
    assert live.state["power"] == "On"
    assert ipmi_peer.chassis("ipmi-b")["powerOns"] >= 1


@peer
def test_state_survives_a_restart_of_the_lab(tmp_path: Path) -> None:
    lab = IpmiPeer(tmp_path, [BmcSpec("keep", power="On", boot="pxe")], password=IPMI_PASSWORD)
    lab.start()
    try:
        port = lab.port("keep")
        assert rmcp_ping("127.0.0.1", port)
        lab.set_chassis("keep", boot="cdrom")
    finally:
        lab.stop()
    assert not rmcp_ping("127.0.0.1", port)
    assert not (tmp_path / "keep" / "ipmi_sim.pid").exists()

    again = IpmiPeer.attach(tmp_path)
    again.start()
    try:
        assert again.port("keep") == port  # same address after a restart
        server = ipmi_server("keep", again.addresses["keep"], credential="c")
        provider = IpmiProvider(ipmi_context({"c": ("admin", IPMI_PASSWORD)}))
        try:
            live = provider.read([server])[server.address]
        finally:
            provider.close()
        assert live.state["power"] == "On"
        assert live.facts["bootOverride"]["device"] == "Cd"
    finally:
        again.stop()
    assert not again.is_running()
    assert os.listdir(tmp_path / "keep")  # the chassis state stays on disk


def test_malformed_answers_are_one_clear_error() -> None:
    # A BMC answering Get Chassis Status with one byte instead of three or four.
    client = IpmiClient(timeout=1.0)
    client._raw = lambda target, what, **kw: b"\x01"  # type: ignore[method-assign]
    with pytest.raises(
        PermanentError,
        match=r"ipmi:10\.0\.0\.9:623: read the power state: "
        r"unexpected answer: Get Chassis Status answer is 1 bytes",
    ):
        client.chassis_status(TARGET)


def test_client_rejects_a_useless_timeout() -> None:
    with pytest.raises(ValueError, match="positive"):
        IpmiClient(timeout=0)
