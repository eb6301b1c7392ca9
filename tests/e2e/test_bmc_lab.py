"""BMC network services and the rotation of the login secret on lab BMCs, plan to apply to plan:
a network change converges and the protocol Metalform uses cannot be turned off; a rotation
across several BMCs converges, also when it was left halfway (an apply killed in the middle),
and then says `previous` can go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from metalform.lab.redfish import LabSystem, RedfishPeer
from metalform.lab.redfish_faults import FaultKind
from reconciler.engine import Engine, Settings
from reconciler.model import Plan

pytestmark = [pytest.mark.peer]
NEW_VAR = "LAB_BMC_PASSWORD_NEW"
OLD_VAR = "LAB_BMC_PASSWORD_OLD"
OLD = "bmc-old-Pa55-never-shown"
NEW = "bmc-new-Pa55-never-shown"
BMCS = ("bmc-1", "bmc-2", "bmc-3")


@pytest.fixture
def peers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, RedfishPeer]]:
    """Three lab BMCs (one system each) on the old secret."""
    monkeypatch.setenv(OLD_VAR, OLD)
    monkeypatch.setenv(NEW_VAR, NEW)
    started: dict[str, RedfishPeer] = {}
    try:
        for name in BMCS:
            started[name] = RedfishPeer(
                tmp_path / name,
                [LabSystem(identity=name, power_state="On")],
                password=OLD,
                die_with_parent=True,
            ).start()
        yield started
    finally:
        for peer in started.values():
            peer.stop()


def write_repo(
    tmp_path: Path, peers: dict[str, RedfishPeer], *, rotating: bool, network: str = ""
) -> Path:
    credential = (
        f"  password: {{fromEnv: {NEW_VAR}}}\n  previous: {{fromEnv: {OLD_VAR}}}\n"
        if rotating
        else f"  password: {{fromEnv: {OLD_VAR}}}\n"
    )
    docs = [
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: bmc}\n"
        f"spec:\n  username: admin\n{credential}"
    ]
    for name, peer in peers.items():
        docs.append(
            "apiVersion: metalform/v1\nkind: Server\n"
            f"metadata: {{name: {name}}}\nspec:\n"
            f'  bmc:\n    driver: redfish\n    address: "{peer.url}"\n'
            f"    systemId: {name}\n    credential: bmc\n{network}"
        )
    path = tmp_path / "repo"
    path.mkdir(exist_ok=True)
    (path / "fleet.yaml").write_text("---\n".join(docs), encoding="utf-8")
    return path


def engine() -> Engine:
    return Engine(Settings(timeout=5.0, retries=1, operation_timeout=30.0))


def operations(plan: Plan) -> list[tuple[str, str]]:
    return [(a.address, a.operation) for a in plan.actions]


def takes(peer: RedfishPeer, password: str, username: str = "admin") -> bool:
    response = requests.get(f"{peer.url}/redfish/v1/Systems", auth=(username, password), timeout=5)
    return response.status_code == 200


def test_network_change_converges_and_the_protocol_in_use_is_refused(
    tmp_path: Path, peers: dict[str, RedfishPeer]
) -> None:
    one = {"bmc-1": peers["bmc-1"]}
    network = (
        "    network:\n      ntpServers: [10.0.0.1, 10.0.0.2]\n"
        "      protocols: {ssh: false, ipmi: true}\n      hostname: bmc-1-lab\n"
    )
    path = write_repo(tmp_path, one, rotating=False, network=network)
    e = engine()
    plan = e.plan(path).plan
    assert not plan.has_errors, plan.diagnostics
    assert operations(plan) == [("Server/bmc-1", "network.set")]
    assert plan.actions[0].params == {
        "ntpServers": ["10.0.0.1", "10.0.0.2"],
        "protocols": {"ssh": False},
        "hostname": "bmc-1-lab",
    }
    assert e.apply(plan).ok
    assert e.plan(path).plan.actions == []
    served = requests.get(
        f"{one['bmc-1'].url}/redfish/v1/Managers", auth=("admin", OLD), timeout=5
    ).json()
    manager = served["Members"][0]["@odata.id"]
    protocol = requests.get(
        f"{one['bmc-1'].url}{manager}/NetworkProtocol", auth=("admin", OLD), timeout=5
    ).json()
    assert protocol["NTP"]["NTPServers"] == ["10.0.0.1", "10.0.0.2"]
    assert protocol["SSH"]["ProtocolEnabled"] is False
    assert protocol["HostName"] == "bmc-1-lab"

    refused = write_repo(
        tmp_path, one, rotating=False, network="    network:\n      protocols: {http: false}\n"
    )
    plan = e.plan(refused).plan
    assert plan.has_errors
    assert [d.message for d in plan.diagnostics if d.severity.value == "error"] == [
        "turning off http would cut Metalform off from this BMC (driver redfish); refused"
    ]
    assert plan.actions == []


def test_a_managed_accounts_password_follows_its_credential(
    tmp_path: Path, peers: dict[str, RedfishPeer], monkeypatch: pytest.MonkeyPatch
) -> None:
    one = {"bmc-1": peers["bmc-1"]}
    accounts = "    accounts:\n      - {username: monitor, role: ReadOnly, credential: monitor}\n"
    path = write_repo(tmp_path, one, rotating=False, network=accounts)
    (path / "monitor.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: monitor}\n"
        "spec: {username: monitor, password: {fromEnv: LAB_MONITOR_PASSWORD}}\n"
    )
    first, second = "monitor-1-Pa55-never-shown", "monitor-2-Pa55-never-shown"
    monkeypatch.setenv("LAB_MONITOR_PASSWORD", first)
    e = engine()
    created = e.plan(path).plan
    assert operations(created) == [("Server/bmc-1", "account.create")]
    assert e.apply(created).ok
    assert e.plan(path).plan.actions == []
    assert takes(one["bmc-1"], first, "monitor")

    # The Credential changes in Git (its secret source): the next plan sets the password.
    monkeypatch.setenv("LAB_MONITOR_PASSWORD", second)
    changed = e.plan(path).plan
    assert operations(changed) == [("Server/bmc-1", "account.set")]
    assert changed.actions[0].params == {"username": "monitor", "credential": "monitor"}
    [change] = changed.changes
    assert [(d.path, d.before, d.after) for d in change.diff] == [
        ("bmc.accounts.monitor.password", "another secret", "the secret of Credential/monitor")
    ]
    assert first not in changed.model_dump_json() and second not in changed.model_dump_json()
    assert e.apply(changed).ok
    assert takes(one["bmc-1"], second, "monitor") and not takes(one["bmc-1"], first, "monitor")
    assert e.plan(path).plan.actions == []

    # Another machine never set it: the password is unknown there and not compared (a
    # login to find out would count a failure against the account).
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "elsewhere"))
    third = "monitor-3-Pa55-never-shown"
    monkeypatch.setenv("LAB_MONITOR_PASSWORD", third)
    assert e.plan(path).plan.actions == []
    # ... unless asked to set unknown passwords (adopting accounts made by hand)
    adopting = e.plan(path, set_unknown_passwords=True).plan
    assert operations(adopting) == [("Server/bmc-1", "account.set")]
    assert [(d.before, d.after) for d in adopting.changes[0].diff] == [
        ("unknown", "the secret of Credential/monitor")
    ]
    assert e.apply(adopting).ok
    assert takes(one["bmc-1"], third, "monitor") and not takes(one["bmc-1"], second, "monitor")
    assert e.plan(path).plan.actions == []


def test_rotation_across_bmcs_converges_also_from_halfway(
    tmp_path: Path, peers: dict[str, RedfishPeer]
) -> None:
    path = write_repo(tmp_path, peers, rotating=True)
    e = engine()
    plan = e.plan(path).plan
    assert operations(plan) == [(f"Server/{n}", "account.rotate") for n in BMCS]
    # Halfway: only the first BMC is rotated (as an apply killed after it would leave it).
    first = Plan.model_validate({**plan.model_dump(), "actions": [plan.actions[0].model_dump()]})
    assert e.apply(first).ok
    assert takes(peers["bmc-1"], NEW) and not takes(peers["bmc-1"], OLD)
    assert all(takes(peers[n], OLD) for n in BMCS[1:])  # every BMC takes one of the two
    # The next plan finishes it.
    rest = e.plan(path).plan
    assert operations(rest) == [(f"Server/{n}", "account.rotate") for n in BMCS[1:]]
    assert not any("can be removed" in d.message for d in rest.diagnostics)
    assert e.apply(rest).ok
    done = e.plan(path).plan
    assert done.actions == []
    assert [d.message for d in done.diagnostics if "can be removed" in d.message] == [
        "every BMC using Credential/bmc (3) logs in with its new secret: "
        "spec.previous can be removed"
    ]
    assert all(takes(peers[n], NEW) and not takes(peers[n], OLD) for n in BMCS)
    for text in (done.model_dump_json(), rest.model_dump_json(), plan.model_dump_json()):
        assert OLD not in text and NEW not in text


def test_a_rotation_killed_halfway_is_finished_by_the_next_apply(
    tmp_path: Path, peers: dict[str, RedfishPeer]
) -> None:
    path = write_repo(tmp_path, peers, rotating=True)
    plan_file = tmp_path / "plan.json"
    metalform = [sys.executable, "-m", "metalform.cli"]
    subprocess.run(
        [*metalform, "plan", "-C", str(path), "-o", str(plan_file)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    # The last BMC's password change hangs: the apply is killed while it waits for it.
    peers["bmc-3"].set_fault("AccountService", FaultKind.HANG)
    apply = subprocess.Popen(
        [*metalform, "apply", "-C", str(path), "--parallelism", "1", str(plan_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (takes(peers["bmc-1"], NEW) and takes(peers["bmc-2"], NEW)):
            assert apply.poll() is None, "apply ended before it rotated two BMCs"
            assert time.monotonic() < deadline, "apply never rotated the first two BMCs"
            time.sleep(0.05)
        time.sleep(0.3)  # now waiting on the third
        assert apply.poll() is None
    finally:
        os.killpg(apply.pid, signal.SIGKILL)
        apply.wait()
    peers["bmc-3"].clear_faults()
    # Every BMC is reachable with one of the two secrets.
    assert takes(peers["bmc-1"], NEW) and takes(peers["bmc-2"], NEW)
    assert takes(peers["bmc-3"], OLD) and not takes(peers["bmc-3"], NEW)

    e = engine()
    rest = e.plan(path).plan
    assert operations(rest) == [("Server/bmc-3", "account.rotate")]
    assert e.apply(rest).ok
    done = e.plan(path).plan
    assert done.actions == []
    assert any("spec.previous can be removed" in d.message for d in done.diagnostics)
