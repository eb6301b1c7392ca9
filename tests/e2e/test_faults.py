"""Faults of live systems against the real emulator: each fails its action clearly, skips its
dependants, spares the independent rest, and a re-plan plans only what is left."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.lab.redfish import LabSystem, RedfishPeer
from reconciler.apply import ActionResult
from reconciler.engine import Engine, Settings
from reconciler.model import Action, ActionStatus
from tests.fixtures.redfish import own_bmc

pytestmark = [pytest.mark.peer]
PASSWORD_VAR = "FAULTS_BMC_PASSWORD"
IDS = ["f-01", "f-02", "f-03"]


def desired(url: str, dead_url: str | None = None) -> str:
    docs = [
        f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: admin, password: {{fromEnv: {PASSWORD_VAR}}}}}
"""
    ]
    for identity in IDS:
        docs.append(f"""apiVersion: metalform/v1
kind: Server
metadata: {{name: {identity}}}
spec:
  bmc: {{driver: redfish, address: "{url}", systemId: {identity}, credential: bmc}}
  power: On
  bios: {{attributes: {{ProcTurboMode: Disabled, NumaNodesPerSocket: 2}}}}
""")
    if dead_url:
        docs.append(f"""apiVersion: metalform/v1
kind: Server
metadata: {{name: f-dead}}
spec:
  bmc: {{driver: redfish, address: "{dead_url}", systemId: x, credential: bmc}}
  power: On
""")
    return "---\n".join(docs)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bmc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedfishPeer]:
    with own_bmc(
        tmp_path, monkeypatch, PASSWORD_VAR, [LabSystem(identity=i, power_state="Off") for i in IDS]
    ) as peer:
        yield peer


def engine() -> Engine:
    return Engine(Settings(timeout=2.0, retries=1, operation_timeout=15.0))


def repo(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "repo"
    path.mkdir(exist_ok=True)
    (path / "fleet.yaml").write_text(text)
    return path


def test_unreachable_bmc_is_named_and_the_rest_is_planned(bmc: RedfishPeer, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    run = engine().plan(repo(tmp_path, desired(bmc.url, dead)))
    warnings = [d for d in run.plan.diagnostics if d.address == "Server/f-dead"]
    assert len(warnings) == 1
    assert "cannot read the server" in warnings[0].message
    assert "connection refused" in warnings[0].message
    assert run.plan.summary.unreachable == 1
    assert {a.address for a in run.plan.actions} == {f"Server/{i}" for i in IDS}


def test_wrong_password_is_named_without_the_password(
    bmc: RedfishPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VAR, "not-the-password")
    run = engine().plan(repo(tmp_path, desired(bmc.url)))
    messages = [d.message for d in run.plan.diagnostics]
    assert len(messages) == len(IDS)
    assert all("refused the credentials of bmc" in m for m in messages), messages
    assert not any("not-the-password" in m for m in messages)
    assert run.plan.actions == []


def test_http_500_mid_apply_fails_one_server_and_skips_its_dependants(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    path = repo(tmp_path, desired(bmc.url))
    e = engine()
    plan = e.plan(path).plan
    assert len(plan.actions) == 2 * len(IDS)  # bios.set then power.on each

    def break_f02(action: Action, result: ActionResult) -> None:
        if result.status is ActionStatus.RUNNING and action.id == plan.actions[0].id:
            bmc.set_fault("f-02", "error")  # the BMC starts failing once apply is under way

    result = e.apply(plan, listener=break_f02)
    by = {(r.address, r.operation): r for r in result.results.values()}
    failed = by[("Server/f-02", "bios.set")]
    assert failed.status is ActionStatus.FAILED
    assert "HTTP 500" in (failed.error or "")
    assert by[("Server/f-02", "power.on")].status is ActionStatus.SKIPPED
    for identity in ("f-01", "f-03"):
        assert by[(f"Server/{identity}", "power.on")].status is ActionStatus.SUCCEEDED

    bmc.clear_faults()
    left = e.plan(path).plan
    assert sorted((a.address, a.operation) for a in left.actions) == [
        ("Server/f-02", "bios.set"),
        ("Server/f-02", "power.on"),
    ]
    assert e.apply(left).count(ActionStatus.SUCCEEDED) == 2
    assert e.plan(path).plan.actions == []


def test_bmc_dies_mid_apply_then_resumes(bmc: RedfishPeer, tmp_path: Path) -> None:
    path = repo(tmp_path, desired(bmc.url))
    e = engine()
    plan = e.plan(path).plan
    bios_ids = {a.id for a in plan.actions if a.operation == "bios.set"}
    done: list[int] = []

    def kill_after_bios(action: Action, result: ActionResult) -> None:
        if result.status is ActionStatus.SUCCEEDED and action.id in bios_ids:
            done.append(action.id)
            if len(done) == len(bios_ids):
                bmc.kill()  # every BIOS change is staged; the BMC dies before power-on

    result = e.apply(plan, listener=kill_after_bios)
    power = [r for r in result.results.values() if r.operation == "power.on"]
    assert power and all(r.status is ActionStatus.FAILED for r in power)
    assert all(
        "connection refused" in (r.error or "") or "did not answer" in (r.error or "")
        for r in power
    ), [r.error for r in power]

    bmc.start()  # the BMC comes back with its state: staged BIOS values are still pending
    left = e.plan(path).plan
    # Only what is left: no BIOS change is staged twice. A power-on the BMC carried out just
    # before it died (its answer lost) is not planned again either.
    assert left.actions and {a.operation for a in left.actions} == {"power.on"}
    assert e.apply(left).count(ActionStatus.SUCCEEDED) == len(left.actions)
    assert e.plan(path).plan.actions == []
