"""`metalform import openstack PROVIDER` against a real nova-api: aggregates made by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from ruamel.yaml import YAML

from metalform.cli import main
from metalform.lab.nova import NovaPeer
from providers.openstack import OpenStackProvider
from reconciler.engine import Engine
from reconciler.load import load

pytestmark = [pytest.mark.peer]


@pytest.fixture
def cloud(nova_peer: NovaPeer) -> Iterator[NovaPeer]:
    nova_peer.reset()
    try:
        yield nova_peer
    finally:
        nova_peer.reset()


def _doc(kind: str, name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {"apiVersion": "metalform/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    )


def _server(name: str, hostname: str) -> str:
    bmc = {"driver": "redfish", "address": "http://127.0.0.1:9", "systemId": name}
    return _doc("Server", name, {"bmc": {**bmc, "credential": "bmc"}, "hostname": hostname})


def _repo(path: Path, url: str, *extra: str) -> Path:
    documents = [
        _doc("Provider", "cloud", {"type": "openstack", "url": url, "timeout": 30}),
        _doc("Provider", "engine", {"type": "docker", "url": "unix:///nonexistent.sock"}),
        _doc(
            "Credential",
            "bmc",
            {"username": "admin", "password": {"fromEnv": "METALFORM_TEST_UNUSED"}},
        ),
        # Three of the four compute hosts have a Server (under another name than the host's).
        *(_server(f"gpu-{n}", f"gpu-host-00{n}") for n in (1, 2, 3)),
        *extra,
    ]
    path.mkdir(parents=True, exist_ok=True)
    (path / "repo.yaml").write_text("\n---\n".join(documents) + "\n", encoding="utf-8")
    return path


def _by_hand(peer: NovaPeer, name: str, zone: str | None, hosts: list[str], meta: dict) -> None:
    """An aggregate made without Metalform: no `metalform:managed` mark."""
    base, headers = f"{peer.url}/os-aggregates", peer.headers()
    body: dict[str, Any] = {"name": name, **({"availability_zone": zone} if zone else {})}
    made = requests.post(base, headers=headers, timeout=10, json={"aggregate": body})
    made.raise_for_status()
    number = made.json()["aggregate"]["id"]
    for host in hosts:
        added = requests.post(
            f"{base}/{number}/action",
            headers=headers,
            timeout=10,
            json={"add_host": {"host": host}},
        )
        added.raise_for_status()
    if meta:
        requests.post(
            f"{base}/{number}/action",
            headers=headers,
            timeout=10,
            json={"set_metadata": {"metadata": meta}},
        ).raise_for_status()


def _import(repo: Path, *extra: str) -> int:
    return main(["import", "openstack", "cloud", "-C", str(repo), *extra])


def _documents(path: Path) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in YAML(typ="safe").load_all(path.read_text())}


def test_import_adopts_aggregates_made_by_hand_and_plans_empty(
    cloud: NovaPeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _by_hand(cloud, "spot", "az-spot", ["gpu-host-001", "gpu-host-002"], {"pool": "spot"})
    _by_hand(cloud, "mixed", None, ["gpu-host-003", "gpu-host-004"], {})
    _by_hand(cloud, "Not_A_Name", None, [], {})
    repo = _repo(tmp_path / "repo", cloud.url)

    assert _import(repo, "--label", "site=yul1") == 0
    report = capsys.readouterr().out
    assert "Read 3 aggregate(s)" in report
    assert "Aggregate/mixed: host(s) gpu-host-004 have no Server in the repository" in report
    assert "'Not_A_Name': not a valid resource name" in report
    assert "Wrote 2 Aggregate" in report
    written = _documents(repo / "aggregates.yaml")
    assert written["spot"]["spec"] == {
        "provider": "cloud",
        "availabilityZone": "az-spot",
        "metadata": {"pool": "spot"},
        "hosts": ["gpu-1", "gpu-2"],
    }
    assert written["spot"]["metadata"]["labels"] == {"site": "yul1"}
    assert written["mixed"]["spec"] == {"provider": "cloud"}

    state = load(repo)
    assert {a.name for a in state.of_kind("Aggregate")} == {"spot", "mixed"}
    engine = Engine(factories={"openstack": OpenStackProvider})
    plan = engine.plan(repo, targets=("Aggregate/spot", "Aggregate/mixed")).plan
    assert not plan.has_errors, [d.render() for d in plan.diagnostics]
    assert plan.actions == [] and not plan.has_changes

    before = (repo / "aggregates.yaml").read_text()
    assert _import(repo) == 0
    again = capsys.readouterr().out
    assert "Nothing new to write." in again and "Aggregate/spot" in again
    assert (repo / "aggregates.yaml").read_text() == before


def test_an_existing_aggregate_wins(
    cloud: NovaPeer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _by_hand(cloud, "spot", None, ["gpu-host-001"], {"pool": "spot"})
    mine = _doc("Aggregate", "spot", {"provider": "cloud", "metadata": {"pool": "other"}})
    repo = _repo(tmp_path / "repo", cloud.url, mine)
    out = tmp_path / "imported"
    assert _import(repo, "--out", str(out)) == 0
    report = capsys.readouterr().out
    assert "Skipped 1 already in the repository" in report and "Aggregate/spot" in report
    assert "Nothing new to write." in report
    assert not (out / "aggregates.yaml").exists()


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ("nope", "PROVIDER 'nope': no Provider of that name"),
        ("engine", "PROVIDER 'engine' is of type docker, not openstack"),
    ],
)
def test_bad_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], provider: str, message: str
) -> None:
    repo = _repo(tmp_path / "repo", "http://127.0.0.1:9")
    assert main(["import", "openstack", provider, "-C", str(repo)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert not (repo / "aggregates.yaml").exists()
