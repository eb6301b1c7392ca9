"""Many IPMI BMCs in one farm process, planned and applied through the IPMI provider."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus

BMCS = 30
PASSWORD = "farm-test-secret"
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: ipmi-{i:02d}}}
spec:
  bmc: {{driver: ipmi, address: "127.0.0.1:{port}", credential: ipmi}}
  power: On
"""


@contextmanager
def running_farm(count: int, *args: str) -> Iterator[int]:
    """The first port of `count` farm BMCs (password PASSWORD) answering at 20 ms a packet."""
    command = ["--count", str(count), "--port", "0", "--latency", "0.02", "--exit-with-stdin"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalform.lab.ipmi_farm", *command, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "IPMI_FARM_PASSWORD": PASSWORD},
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        yield int(ready["ports"][0])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.fixture
def farm() -> Iterator[int]:
    with running_farm(BMCS) as port:
        yield port


def write_inventory(root: Path, first_port: int, count: int) -> None:
    head = (
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: ipmi}\n"
        "spec: {username: admin, password: {fromEnv: IPMI_PASSWORD}}\n"
    )
    servers = "".join(SERVER.format(i=i, port=first_port + i) for i in range(count))
    (root / "inventory.yaml").write_text(head + servers)


def test_a_farm_of_ipmi_bmcs_is_planned_and_applied(
    farm: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPMI_PASSWORD", PASSWORD)
    write_inventory(tmp_path, farm, BMCS)
    engine = Engine(Settings(parallelism=BMCS))
    started = time.monotonic()
    plan = engine.plan(tmp_path).plan
    seconds = time.monotonic() - started
    assert plan.summary.unreachable == 0
    assert [(a.operation, a.status) for a in plan.actions] == [
        ("power.on", ActionStatus.PLANNED)
    ] * BMCS
    # One login and three reads per BMC, all BMCs at once: well under a second of latency.
    assert seconds < 5, f"planning {BMCS} IPMI BMCs took {seconds:.1f}s"
    result = engine.apply(plan)
    assert result.count(ActionStatus.SUCCEEDED) == BMCS
    assert engine.plan(tmp_path).plan.actions == []


LOSSY_BMCS = 64


def test_every_bmc_of_a_lossy_farm_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 3% of the BMCs' packets lost (about 20 of 600): pyghmi retransmits, logs in again where
    # a login lost a packet, and no BMC ends up Unreachable. With 64 BMCs on one client UDP
    # port, a lost packet used to stall other BMCs (a deadlock of pyghmi's locks, its I/O
    # thread blocked on a quiet socket, the farm forgetting the sessions of a whole port): 24
    # to 38 s and up to 14 BMCs Unreachable.
    monkeypatch.setenv("IPMI_PASSWORD", PASSWORD)
    with running_farm(LOSSY_BMCS, "--loss", "0.03") as port:
        write_inventory(tmp_path, port, LOSSY_BMCS)
        started = time.monotonic()
        plan = Engine(Settings(parallelism=LOSSY_BMCS)).plan(tmp_path).plan
        seconds = time.monotonic() - started
    assert plan.summary.unreachable == 0, (
        f"{plan.summary.unreachable} Unreachable in {seconds:.1f}s"
    )
    assert len(plan.actions) == LOSSY_BMCS
    assert seconds < 15, f"planning {LOSSY_BMCS} IPMI BMCs at 3% loss took {seconds:.1f}s"


# A client in a process of its own: pyghmi shares UDP sockets process-wide, and this one
# needs both BMCs' sessions on the same socket, as a fresh process puts them.
SAME_PORT_LOGIN_AGAIN = """
    import os, sys, time
    from pyghmi.ipmi.command import Command
    from pyghmi.ipmi.private import session as ipmi_session
    import providers.ipmi.client  # the workarounds the provider runs with

    port, password = int(sys.argv[1]), os.environ["IPMI_FARM_PASSWORD"]

    def login(bmc_port):
        return Command(bmc="127.0.0.1", port=bmc_port, userid="admin", password=password)

    first, second = login(port), login(port + 1)
    first.ipmi_session.logout()
    ipmi_session.Session.initting_sessions.clear()  # pyghmi keeps the logged-out one there
    again = login(port)
    assert again.ipmi_session.socket is second.ipmi_session.socket, "not one UDP port"
    started = time.monotonic()
    second.xraw_command(netfn=6, command=1)
    print(time.monotonic() - started)
"""


def test_a_login_again_from_a_client_port_leaves_other_bmcs_sessions_alone() -> None:
    # Real BMCs are separate devices: a new login to one leaves the sessions of the others.
    with running_farm(2) as port:
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SAME_PORT_LOGIN_AGAIN), str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "IPMI_FARM_PASSWORD": PASSWORD},
        )
    assert result.returncode == 0, result.stderr
    seconds = float(result.stdout.strip().splitlines()[-1])
    # Answered at once (two packets of 20 ms), not after pyghmi gave up and logged in again.
    assert seconds < 1, f"the second BMC answered after {seconds:.1f}s"
