"""A health-gated rollout on the lab: three servers of one rack, one disrupted at a time, so three
waves; the wave-2 server's tcp check points at a closed loopback port. The third wave never
starts, and both the CLI's apply output and the server's apply events say why."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from metalform import cli
from metalform.api import create_app
from metalform.lab.redfish import LabSystem, RedfishPeer
from metalform.server.config import config_from_mapping
from metalform.store import Store
from providers.memory import MemoryFleet
from reconciler.engine import Engine, Settings
from tests.fixtures.redfish import own_bmc
from tests.server.harness import GitRemote, Harness, config_mapping

pytestmark = [pytest.mark.peer]

PASSWORD_VAR = "ROLLOUT_BMC_PASSWORD"
WAVES = {"rr-1": 1, "rr-2": 2, "rr-3": 3}
"""Servers in address order: the planner fills the waves in that order, one a wave."""
WHY_SKIPPED = "wave 2 failed its health checks (Server/rr-2: "


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def desired(url: str, port: int) -> str:
    docs = [
        f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: admin, password: {{fromEnv: {PASSWORD_VAR}}}}}
""",
        """apiVersion: metalform/v1
kind: Policy
metadata: {name: one-per-rack}
spec:
  maxDisruptedPerGroup: {groupBy: rack, max: 1}
  rollout: {maxFailures: 3}
""",
    ]
    for name in WAVES:
        check = f"  checks: [{{tcp: '127.0.0.1:{port}', timeout: 1s}}]\n" if name == "rr-2" else ""
        docs.append(
            f"""apiVersion: metalform/v1
kind: Server
metadata: {{name: {name}, labels: {{rack: r1}}}}
spec:
  bmc: {{driver: redfish, address: "{url}", systemId: {name}, credential: bmc}}
  power: Off
{check}"""
        )
    return "---\n".join(docs)


@pytest.fixture
def bmc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedfishPeer]:
    with own_bmc(
        tmp_path,
        monkeypatch,
        PASSWORD_VAR,
        [LabSystem(identity=name, power_state="On") for name in WAVES],
    ) as peer:
        yield peer


def power(peer: RedfishPeer) -> dict[str, str]:
    return {name: str(peer.system_document(name)["PowerState"]) for name in WAVES}


def test_the_cli_apply_stops_before_the_third_wave_and_says_why(
    bmc: RedfishPeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "fleet.yaml").write_text(desired(bmc.url, closed_port()))
    code = cli.main(["apply", "-C", str(repo), "--auto-approve"])
    out, err = capsys.readouterr()
    shown = out + err
    assert code == 1, shown
    # wave 1 and 2 powered off; the health check of rr-2 failed; rr-3 was never touched
    assert power(bmc) == {"rr-1": "Off", "rr-2": "Off", "rr-3": "On"}
    assert "health check failed: tcp 127.0.0.1:" in shown
    assert WHY_SKIPPED in shown
    assert "the rest of the rollout is skipped" in shown
    assert "Traceback" not in shown


@pytest.fixture
def lab_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bmc: RedfishPeer
) -> Iterator[tuple[Harness, int]]:
    """The server's app on a Git remote holding the rollout, with the real providers."""
    monkeypatch.setenv("TEST_GITHUB_SECRET", "unused-github-secret")
    monkeypatch.setenv("TEST_GITLAB_SECRET", "unused-gitlab-secret")
    remote = GitRemote(tmp_path)
    shutil.rmtree(remote.work / "infra")
    port = closed_port()
    remote.write("fleet.yaml", desired(bmc.url, port))
    remote.commit("a rollout of three waves")
    remote.push("main")
    config = config_from_mapping(
        config_mapping(remote, tmp_path, None), base_dir=tmp_path, environ={}
    )
    store = Store.open(config.database)
    app = create_app(config, Engine(Settings(timeout=2.0, retries=1)), store)
    try:
        yield (
            Harness(remote, MemoryFleet({}), config, store, app, falcon.testing.TestClient(app)),
            port,
        )
    finally:
        app.stopping.set()
        app.hub.close()
        app.service.close(10)
        store.close()


def test_the_servers_apply_events_say_why_the_third_wave_never_started(
    lab_harness: tuple[Harness, int], bmc: RedfishPeer
) -> None:
    harness, port = lab_harness
    plan = harness.plan()
    assert plan["status"] == "succeeded", plan["error"]
    waves = {a["address"]: a["wave"] for a in plan["plan"]["actions"]}
    assert waves == {f"Server/{name}": wave for name, wave in WAVES.items()}
    applied = harness.apply(plan["id"])
    statuses = {a["address"]: (a["status"], a.get("error") or "") for a in applied["actions"]}
    assert statuses["Server/rr-1"] == ("succeeded", "")
    assert statuses["Server/rr-2"][0] == "failed"
    assert statuses["Server/rr-2"][1].startswith(f"health check failed: tcp 127.0.0.1:{port}")
    assert statuses["Server/rr-3"][0] == "skipped"
    assert statuses["Server/rr-3"][1].startswith(WHY_SKIPPED)
    assert power(bmc)["rr-3"] == "On"
    stream = harness.get(f"/api/v1/applies/{applied['id']}/events").text
    assert "event: action.updated" in stream
    assert WHY_SKIPPED in stream
    assert f"health check failed: tcp 127.0.0.1:{port}" in stream
