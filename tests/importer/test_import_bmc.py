"""`metalform import` against lab BMCs: what it writes validates, plans empty, and wins never."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from metalform.cli import main
from metalform.lab.ipmi import IpmiPeer
from reconciler.engine import Engine
from reconciler.load import load
from reconciler.model import Resource
from tests.fixtures.ipmi import IPMI_PASSWORD, IPMI_USERNAME
from tests.fixtures.redfish import LAB_PASSWORD, LAB_USERNAME
from tests.importer.conftest import OTHER_PASSWORD

CREDENTIALS = f"""\
apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc-lab}}
spec: {{username: {LAB_USERNAME}, password: {{fromEnv: IMPORT_TEST_PW}}}}
---
apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc-ipmi}}
spec: {{username: {IPMI_USERNAME}, password: {{fromEnv: IMPORT_TEST_IPMI_PW}}}}
"""


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMPORT_TEST_PW", LAB_PASSWORD)
    monkeypatch.setenv("IMPORT_TEST_IPMI_PW", IPMI_PASSWORD)
    (tmp_path / "credentials.yaml").write_text(CREDENTIALS, encoding="utf-8")
    return tmp_path


def _import(repo: Path, port: int, *extra: str) -> int:
    return main(
        [
            "import",
            "redfish",
            "127.0.0.1-127.0.0.3",
            "--credential",
            "bmc-lab",
            "--scheme",
            "http",
            "--port",
            str(port),
            "-C",
            str(repo),
            "--label",
            "site=yul1",
            *extra,
        ]
    )


def _documents(path: Path) -> dict[str, dict]:
    docs = YAML(typ="safe").load_all(path.read_text(encoding="utf-8"))
    return {d["metadata"]["name"]: d for d in docs}


def _files(repo: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(repo.glob("*.yaml"))}


def test_import_validates_plans_empty_and_reports_every_address(
    repo: Path, import_bmcs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _import(repo, import_bmcs) == 0
    report = capsys.readouterr().out
    assert "3 system(s) at 1 address(es) answered, 2 address(es) did not" in report
    assert "2 x Dell Inc. PowerEdge R760" in report and "1 x Supermicro SYS-221H-TNR" in report
    assert "127.0.0.2: wrong credential:" in report
    assert "127.0.0.3: unreachable:" in report and "connection refused" in report

    servers = _documents(repo / "servers.yaml")
    templates = _documents(repo / "bios-templates.yaml")
    assert (
        (repo / "servers.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=schemas/metalform.schema.json\n---\n")
    )
    assert sorted(servers) == ["imp-a", "imp-b", "imp-c"]
    dell = templates["dell-inc-poweredge-r760"]["spec"]
    # Shared by both Dell servers: in the template; where they differ: in each Server only.
    assert dell["attributes"]["ProcTurboMode"] == "Disabled"
    assert "NumaNodesPerSocket" not in dell["attributes"]
    assert servers["imp-a"]["spec"]["bios"] == {
        "template": "dell-inc-poweredge-r760",
        "attributes": {"NumaNodesPerSocket": 2},
    }
    assert servers["imp-b"]["spec"]["bios"]["attributes"] == {"NumaNodesPerSocket": 1}
    assert servers["imp-b"]["spec"]["power"] == "Off"
    assert servers["imp-a"]["spec"]["bmc"] == {
        "driver": "redfish",
        "address": f"http://127.0.0.1:{import_bmcs}",
        "systemId": "imp-a",
        "credential": "bmc-lab",
    }
    assert servers["imp-c"]["metadata"]["labels"] == {"site": "yul1"}

    state = load(repo)
    assert len(state.of_kind("Server")) == 3 and len(state.of_kind("BiosTemplate")) == 2
    run = Engine().plan(repo)
    assert not run.plan.has_changes, [a.operation for a in run.plan.actions]
    assert not run.plan.has_errors

    written = "".join(_files(repo).values()) + report
    for secret in (LAB_PASSWORD, OTHER_PASSWORD):
        assert secret not in written

    before = _files(repo)
    assert _import(repo, import_bmcs) == 0
    again = capsys.readouterr().out
    assert "Nothing new to write." in again
    assert "Server/imp-a" in again and "BiosTemplate/dell-inc-poweredge-r760" in again
    assert _files(repo) == before


def test_an_existing_server_wins(
    repo: Path, import_bmcs: int, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = """\
apiVersion: metalform/v1
kind: Server
metadata: {name: imp-b}
spec:
  bmc: {driver: redfish, address: http://10.9.9.9, credential: bmc-lab}
"""
    (repo / "mine.yaml").write_text(mine, encoding="utf-8")
    out = repo / "imported"
    assert _import(repo, import_bmcs, "--out", str(out), "--split", "site") == 0
    report = capsys.readouterr().out
    assert "Skipped 1 already in the repository" in report and "Server/imp-b" in report
    assert (repo / "mine.yaml").read_text(encoding="utf-8") == mine
    written = _documents(out / "site-yul1.yaml")
    assert "imp-b" not in written and {"imp-a", "imp-c"} <= set(written)
    assert (
        (out / "site-yul1.yaml")
        .read_text()
        .startswith("# yaml-language-server: $schema=../schemas/metalform.schema.json\n")
    )
    assert isinstance(load(repo).get("Server", "imp-a"), Resource)


def test_ipmi_import_plans_empty(
    repo: Path,
    ipmi_servers: dict[str, Resource],
    ipmi_peer: IpmiPeer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host, port = ipmi_peer.addresses["ipmi-a"].rsplit(":", 1)
    code = main(
        [
            "import",
            "ipmi",
            host,
            "--credential",
            "bmc-ipmi",
            "--port",
            port,
            "-C",
            str(repo),
            "--name",
            "ipmi-{address}",
        ]
    )
    assert code == 0, capsys.readouterr()
    server = _documents(repo / "servers.yaml")["ipmi-127.0.0.1"]
    assert server["spec"]["bmc"]["address"] == f"{host}:{port}"
    assert server["spec"]["power"] == "Off"
    run = Engine().plan(repo)
    assert not run.plan.has_changes and not run.plan.has_errors
    assert IPMI_PASSWORD not in (repo / "servers.yaml").read_text(encoding="utf-8")
