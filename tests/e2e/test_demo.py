"""The README's demo path, end to end: `metalform lab up`, validate, plan, apply, converge.

Real peers: sushy-emulator (six Redfish servers) and two ipmi_sim BMCs, started by the same
`metalform lab up` a user runs, on free loopback ports; inventory-example/ is copied and pointed
at those ports. Then drift made by hand on the emulator must show up in the next plan.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.lab.cli import system_id
from metalform.lab.redfish import RedfishPeer

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.peer, pytest.mark.xdist_group("e2e")]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_ports(count: int) -> int:
    """The first of `count` consecutive free UDP ports."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            held = []
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no consecutive free UDP ports on 127.0.0.1")


class Demo:
    def __init__(self, root: Path, state: Path, env: dict[str, str]) -> None:
        self.root = root
        self.state = state
        self.env = env

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            # the console script, as a user runs it (python -m would put the cwd on sys.path)
            [str(Path(sys.executable).parent / "metalform"), *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    work = tmp_path_factory.mktemp("demo")
    state = work / ".metalform-lab"
    redfish_port, ipmi_base = free_tcp_port(), free_udp_ports(2)
    smtp_port, status_port, maas_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    nova_port = free_tcp_port()
    env = {**os.environ, "NO_COLOR": "1"}
    inventory = work / "inventory"
    shutil.copytree(ROOT / "inventory-example", inventory)
    for path in inventory.rglob("*.yaml"):
        text = path.read_text()
        text = (
            text.replace("127.0.0.1:18000", f"127.0.0.1:{redfish_port}")
            .replace("127.0.0.1:16230", f"127.0.0.1:{ipmi_base}")
            .replace("127.0.0.1:16231", f"127.0.0.1:{ipmi_base + 1}")
            .replace("127.0.0.1:2525", f"127.0.0.1:{smtp_port}")
            .replace("127.0.0.1:18080", f"127.0.0.1:{status_port}")
            .replace("127.0.0.1:5240", f"127.0.0.1:{maas_port}")
            .replace("127.0.0.1:8774", f"127.0.0.1:{nova_port}")
        )
        path.write_text(text)
    d = Demo(work, state, env)
    up = d.run(
        "lab",
        "up",
        "--state-dir",
        str(state),
        "--redfish-port",
        str(redfish_port),
        "--ipmi-base-port",
        str(ipmi_base),
        "--smtp-port",
        str(smtp_port),
        "--maas-port",
        str(maas_port),
        "--nova-port",
        str(nova_port),
    )
    assert up.returncode == 0, up.stdout + up.stderr
    for line in (state / "env").read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = shlex.split(value)[0]
    try:
        yield d
    finally:
        down = d.run("lab", "down", "--state-dir", str(state))
        assert down.returncode == 0, down.stderr


def test_demo_plans_applies_and_converges(demo: Demo) -> None:
    valid = demo.run("validate", "-C", "inventory")
    assert valid.returncode == 0, valid.stderr
    assert "8 Server" in valid.stdout

    plan = demo.run("plan", "-C", "inventory", "-o", "demo.plan.json", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "Traceback" not in plan.stderr
    saved = json.loads((demo.root / "demo.plan.json").read_text())
    assert saved["summary"]["update"] == 8
    # the three Services on the lab's Docker engine and the two GPU aggregates in Nova
    assert saved["summary"]["create"] == 5
    assert saved["summary"]["unreachable"] == 0
    operations = sorted((a["address"], a["operation"]) for a in saved["actions"])
    # every server was off: power on; every Redfish server stages its BIOS first
    assert sum(1 for _, op in operations if op == "power.on") == 8
    assert sum(1 for _, op in operations if op == "bios.set") == 6
    assert ("Server/compute-002", "boot.set") in operations
    # the four GPU hosts get the mf-g8 baseline's BIOS and BMC firmware; the power-on that
    # boots them activates the staged BIOS firmware (no reset of its own)
    assert sum(1 for _, op in operations if op == "firmware.update") == 8
    assert not any(op == "firmware.reset" for _, op in operations)
    power_on = next(
        a
        for a in saved["actions"]
        if a["address"] == "Server/gpu-host-003" and a["operation"] == "power.on"
    )
    assert power_on["expect"]["current"]["firmware.BIOS"] == "1.2.0"
    gpu1 = next(
        a
        for a in saved["actions"]
        if a["address"] == "Server/gpu-host-001" and a["operation"] == "bios.set"
    )
    gpu2 = next(
        a
        for a in saved["actions"]
        if a["address"] == "Server/gpu-host-002" and a["operation"] == "bios.set"
    )
    # gpu-l40 turns turbo off; gpu-host-001 overrides it back on, which is the lab's default
    assert gpu2["params"]["attributes"]["ProcTurboMode"] == "Disabled"
    assert "ProcTurboMode" not in gpu1["params"]["attributes"]
    assert gpu1["params"]["attributes"]["NumaNodesPerSocket"] == 2  # from gpu-l40
    assert gpu1["params"]["attributes"]["WorkloadProfile"] == "HighPerformance"  # compute-base
    assert "Server/gpu-host-001" in plan.stdout and "power.on" in plan.stdout

    apply = demo.run("apply", "demo.plan.json")
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert f"{len(saved['actions'])} succeeded, 0 failed" in apply.stdout

    again = demo.run("plan", "-C", "inventory", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "No changes" in again.stdout


def test_bios_staged_by_hand_is_drift(demo: Demo) -> None:
    converge = demo.run("apply", "-C", "inventory", "--auto-approve")
    assert converge.returncode == 0, converge.stdout + converge.stderr
    peer = RedfishPeer.attach(demo.state / "redfish")
    peer.stage_bios(system_id("compute-001"), {"ProcVirtualization": "Disabled"})

    drift = demo.run("plan", "-C", "inventory", "--detailed-exitcode", "--format", "json")
    assert drift.returncode == 2, drift.stdout + drift.stderr
    plan = json.loads(drift.stdout)
    change = next(c for c in plan["changes"] if c["address"] == "Server/compute-001")
    entry = next(e for e in change["diff"] if e["path"] == "bios.attributes.ProcVirtualization")
    assert (entry["before"], entry["pending"], entry["after"]) == ("Enabled", "Disabled", "Enabled")
    assert [a["operation"] for a in plan["actions"]] == ["bios.set"]

    # A plan made before another change by hand is refused as stale, and nothing runs.
    (demo.root / "stale.plan.json").write_text(drift.stdout)
    peer.stage_bios(
        system_id("compute-001"), {"ProcVirtualization": "Enabled", "LogicalProc": "Disabled"}
    )
    stale = demo.run("apply", "stale.plan.json")
    assert stale.returncode == 1
    assert "plan is stale" in stale.stderr and "Server/compute-001" in stale.stderr

    fixed = demo.run("apply", "-C", "inventory", "--auto-approve")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    final = demo.run("plan", "-C", "inventory", "--detailed-exitcode")
    assert final.returncode == 0, final.stdout + final.stderr
