"""`metalform import maas PROVIDER` against the MAAS simulator and a lab Redfish BMC."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from metalform.cli import main
from metalform.lab.maas import LabMachine, MaasPeer
from metalform.lab.maas_sim import LAB_BMC_PASSWORD
from reconciler.engine import Engine
from reconciler.load import load
from tests.fixtures.maas import start_peer
from tests.fixtures.redfish import LAB_PASSWORD, LAB_USERNAME

pytestmark = [pytest.mark.peer]


@pytest.fixture(scope="module")
def maas(tmp_path_factory: pytest.TempPathFactory, import_bmcs: int) -> Iterator[MaasPeer]:
    """A MAAS whose machines are BMC `imp-a` of the lab (known), one without a BMC address,
    one still New, and one the repository declares already."""
    machines = [
        LabMachine(
            "imp-a",
            status="Deployed",
            distro_series="jammy",
            tags=("gpu",),
            power_type="redfish",
            power_address=f"http://127.0.0.1:{import_bmcs}",
            power_node="imp-a",
        ),
        LabMachine("no-bmc", status="Ready"),
        LabMachine("fresh", status="New", power_type="ipmi", power_address="127.0.0.1:9623"),
        LabMachine("mine", status="Ready", power_type="ipmi", power_address="127.0.0.1:9624"),
    ]
    peer = start_peer(tmp_path_factory.mktemp("maas-import"), machines)
    try:
        yield peer
    finally:
        peer.stop()


def _doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {"apiVersion": "metalform/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def _repo(path: Path, peer: MaasPeer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MAAS_IMPORT_KEY", peer.api_key)
    monkeypatch.setenv("MAAS_IMPORT_BMC_PW", LAB_PASSWORD)
    documents = [
        _doc("Provider", "lab-maas", {"type": "maas", "url": peer.url, "credential": "maas-key"}),
        _doc("Provider", "cloud", {"type": "openstack", "url": "http://127.0.0.1:9"}),
        _doc("Credential", "maas-key", {"type": "token", "token": {"fromEnv": "MAAS_IMPORT_KEY"}}),
        _doc(
            "Credential",
            "bmc-lab",
            {"username": LAB_USERNAME, "password": {"fromEnv": "MAAS_IMPORT_BMC_PW"}},
        ),
        _doc(
            "Server",
            "my-server",
            {
                "hostname": "mine",
                "bmc": {"driver": "ipmi", "address": "127.0.0.1:9624", "credential": "bmc-lab"},
            },
        ),
    ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "repo.yaml").write_text("\n---\n".join(documents) + "\n", encoding="utf-8")
    return path


def _import(repo: Path, *extra: str) -> int:
    return main(["import", "maas", "lab-maas", "-C", str(repo), *extra])


def test_import_writes_servers_whose_bmc_maas_knows_and_plans_empty(
    maas: MaasPeer,
    import_bmcs: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _repo(tmp_path / "repo", maas, monkeypatch)
    assert _import(repo, "--credential", "bmc-lab", "--label", "site=yul1") == 0
    report = capsys.readouterr().out
    assert "Read 4 machine(s)" in report
    assert "machine no-bmc: no BMC address known to MAAS" in report
    assert "Server/fresh: MAAS state 'New' cannot be declared" in report
    assert "Skipped 1 already in the repository" in report and "Server/my-server" in report
    assert "Wrote 2 Server" in report
    servers = {
        d["metadata"]["name"]: d
        for d in YAML(typ="safe").load_all((repo / "servers.yaml").read_text())
    }
    assert sorted(servers) == ["fresh", "imp-a"]
    assert servers["imp-a"]["spec"] == {
        "bmc": {
            "driver": "redfish",
            "address": f"http://127.0.0.1:{import_bmcs}",
            "systemId": "imp-a",
            "credential": "bmc-lab",
        },
        "provisioning": {
            "provider": "lab-maas",
            "state": "Deployed",
            "distroSeries": "jammy",
            "tags": ["gpu"],
        },
    }
    assert servers["imp-a"]["metadata"]["labels"] == {"site": "yul1"}
    assert servers["fresh"]["spec"] == {
        "bmc": {"driver": "ipmi", "address": "127.0.0.1:9623", "credential": "bmc-lab"}
    }
    written = (repo / "servers.yaml").read_text() + report
    assert LAB_BMC_PASSWORD not in written and maas.api_key not in written

    assert len(load(repo).of_kind("Server")) == 3
    plan = Engine().plan(repo, targets=("Server/imp-a",)).plan
    assert not plan.has_errors, [d.render() for d in plan.diagnostics]
    assert plan.actions == [] and not plan.has_changes

    before = (repo / "servers.yaml").read_text()
    assert _import(repo, "--credential", "bmc-lab") == 0
    again = capsys.readouterr().out
    assert "Nothing new to write." in again and "Server/imp-a" in again
    assert (repo / "servers.yaml").read_text() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "import maas needs --credential NAME"),
        (["--credential", "nope"], "--credential 'nope': no Credential of that name"),
    ],
)
def test_bad_credential(
    maas: MaasPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    repo = _repo(tmp_path / "repo", maas, monkeypatch)
    assert _import(repo, *args) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (repo / "servers.yaml").exists()


def test_provider_of_the_wrong_type(
    maas: MaasPeer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _repo(tmp_path / "repo", maas, monkeypatch)
    assert main(["import", "maas", "cloud", "-C", str(repo), "--credential", "bmc-lab"]) == 1
    assert "PROVIDER 'cloud' is of type openstack, not maas" in capsys.readouterr().err
