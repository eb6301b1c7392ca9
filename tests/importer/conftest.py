"""Fixtures of the import tests: two lab BMCs on one port of two loopback addresses.

127.0.0.1 takes the lab credential, 127.0.0.2 another one, and nothing listens on
127.0.0.3: one range then holds a BMC that answers, a wrong credential and a dead address.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.lab.redfish import LabSystem, RedfishPeer
from tests.fixtures.redfish import LAB_PASSWORD, LAB_USERNAME

OTHER_PASSWORD = "other-Pa55word-of-the-second-bmc"
IMPORT_SYSTEMS = [
    LabSystem(
        "imp-a",
        manufacturer="Dell Inc.",
        model="PowerEdge R760",
        power_state="On",
        bios={"ProcTurboMode": "Disabled", "NumaNodesPerSocket": 2},
    ),
    LabSystem(
        "imp-b",
        manufacturer="Dell Inc.",
        model="PowerEdge R760",
        power_state="Off",
        bios={"ProcTurboMode": "Disabled", "NumaNodesPerSocket": 1},
    ),
    LabSystem("imp-c", manufacturer="Supermicro", model="SYS-221H-TNR", power_state="On"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(
    state: Path, host: str, port: int, password: str, systems: list[LabSystem]
) -> RedfishPeer:
    peer = RedfishPeer(
        state,
        systems,
        host=host,
        port=port,
        username=LAB_USERNAME,
        password=password,
        die_with_parent=True,
    )
    try:
        return peer.start()
    except Exception as exc:
        pytest.fail(f"sushy-emulator did not start: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def import_bmcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port both lab BMCs listen on."""
    port = _free_port()
    first = _start(
        tmp_path_factory.mktemp("imp-1"), "127.0.0.1", port, LAB_PASSWORD, IMPORT_SYSTEMS
    )
    second = _start(
        tmp_path_factory.mktemp("imp-2"),
        "127.0.0.2",
        port,
        OTHER_PASSWORD,
        [LabSystem("imp-z", power_state="On")],
    )
    try:
        yield port
    finally:
        first.stop()
        second.stop()
