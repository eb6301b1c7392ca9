"""`metalform import docker PROVIDER` against a real dockerd: containers started by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from ruamel.yaml import YAML

from metalform.cli import main
from metalform.lab.docker import BUSYBOX_IMAGE, SERVICE_COMMAND, DockerPeer
from providers.docker import DockerProvider
from providers.docker.mapping import MANAGED_KEY, SPEC_KEY
from reconciler.engine import Engine

pytestmark = [pytest.mark.peer]

DB_PASSWORD = "hand-set-Db-pa55word"
SESSION_SEED = "q8F3kd92LmQz7Xw1vB5nR0tYzP4"
"""A secret under an innocent name: caught by its entropy."""
VARIABLE = "METALFORM_SECRET_WEB_DB_PASSWORD"
SEED_VARIABLE = "METALFORM_SECRET_WEB_SESSION_SEED"


@pytest.fixture
def engine_client(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    docker_peer.remove_containers()
    client = docker_peer.client()
    try:
        yield client
    finally:
        client.close()
        docker_peer.remove_containers()


def _by_hand(client: docker.DockerClient, volume: Path) -> None:
    """Two containers made without Metalform: no management label."""
    client.containers.run(
        BUSYBOX_IMAGE,
        SERVICE_COMMAND,
        name="web",
        detach=True,
        network_mode="none",
        environment={"DB_PASSWORD": DB_PASSWORD, "SESSION_SEED": SESSION_SEED, "MODE": "prod"},
        labels={"team": "web"},
        volumes=[f"{volume}:/data:ro"],
        restart_policy={"Name": "unless-stopped"},
    )
    client.containers.create(BUSYBOX_IMAGE, ["sleep", "600"], name="batch", network_mode="none")


def _repo(path: Path, url: str, *extra: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    provider = {
        "apiVersion": "metalform/v1",
        "kind": "Provider",
        "metadata": {"name": "engine"},
        "spec": {"type": "docker", "url": url, "timeout": 20},
    }
    (path / "provider.yaml").write_text("\n---\n".join([json.dumps(provider), *extra]) + "\n")
    return path


def _documents(path: Path) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in YAML(typ="safe").load_all(path.read_text())}


def _engine() -> Engine:
    return Engine(factories={"docker": DockerProvider})


def test_import_adopts_containers_and_never_writes_a_secret(
    engine_client: docker.DockerClient,
    docker_peer: DockerPeer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _by_hand(engine_client, tmp_path)
    repo = _repo(tmp_path / "repo", docker_peer.url)
    assert main(["import", "docker", "engine", "-C", str(repo)]) == 0
    report = capsys.readouterr().out
    assert "Read 2 container(s)" in report
    assert f"set {VARIABLE} to its value (Credential/web-db-password)" in report
    assert f"set {SEED_VARIABLE} to its value" in report
    assert "Wrote 2 Credential, 2 Service" in report

    services = _documents(repo / "services.yaml")
    assert services["web"]["spec"] == {
        "provider": "engine",
        "image": BUSYBOX_IMAGE,
        "command": SERVICE_COMMAND,
        "env": {
            "DB_PASSWORD": {"credential": "web-db-password"},
            "MODE": "prod",
            "SESSION_SEED": {"credential": "web-session-seed"},
        },
        "volumes": [f"{tmp_path}:/data:ro"],
        "restartPolicy": "unless-stopped",
        "labels": {"team": "web"},
        "networkMode": "none",
        "adopt": True,
    }
    assert services["batch"]["spec"]["state"] == "Stopped"
    assert services["batch"]["spec"]["command"] == ["sleep", "600"]
    credentials = _documents(repo / "credentials.yaml")
    assert credentials["web-db-password"]["spec"] == {
        "type": "token",
        "token": {"fromEnv": VARIABLE},
    }
    written = "".join(p.read_text() for p in repo.glob("*.yaml")) + report
    assert DB_PASSWORD not in written and SESSION_SEED not in written

    # Before the secrets are set, the plan says which is missing; then it is empty.
    plan = _engine().plan(repo).plan
    assert plan.has_errors
    assert any(VARIABLE in d.message for d in plan.diagnostics)
    monkeypatch.setenv(VARIABLE, DB_PASSWORD)
    monkeypatch.setenv(SEED_VARIABLE, SESSION_SEED)
    plan = _engine().plan(repo).plan
    assert not plan.has_errors, [d.render() for d in plan.diagnostics]
    assert plan.actions == [] and not plan.has_changes
    shown = plan.model_dump_json()
    assert DB_PASSWORD not in shown and SESSION_SEED not in shown

    before = {p.name: p.read_text() for p in repo.glob("*.yaml")}
    assert main(["import", "docker", "engine", "-C", str(repo)]) == 0
    again = capsys.readouterr().out
    assert "Nothing new to write." in again and "Service/web" in again
    assert {p.name: p.read_text() for p in repo.glob("*.yaml")} == before

    # A change re-creates the adopted container as a managed one, its secret resolved.
    text = (repo / "services.yaml").read_text().replace("MODE: prod", "MODE: debug")
    (repo / "services.yaml").write_text(text)
    plan = _engine().plan(repo).plan
    assert [(a.address, a.operation) for a in plan.actions] == [
        ("Service/web", "service.recreate"),
        ("Service/web", "service.start"),
    ]
    params = plan.model_dump_json()
    assert DB_PASSWORD not in params and "hmac-sha256:" in params
    result = _engine().apply(plan)
    assert result.ok, [(r.operation, r.error) for r in result.results.values() if r.error]
    web = engine_client.containers.get("web")
    assert f"DB_PASSWORD={DB_PASSWORD}" in web.attrs["Config"]["Env"]
    assert web.labels[MANAGED_KEY] == "true"
    assert DB_PASSWORD not in web.labels[SPEC_KEY]
    assert _engine().plan(repo).plan.actions == []


def test_an_existing_service_wins(
    engine_client: docker.DockerClient,
    docker_peer: DockerPeer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _by_hand(engine_client, tmp_path)
    mine = json.dumps(
        {
            "apiVersion": "metalform/v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"provider": "engine", "image": BUSYBOX_IMAGE},
        }
    )
    repo = _repo(tmp_path / "repo", docker_peer.url, mine)
    assert main(["import", "docker", "engine", "-C", str(repo)]) == 0
    report = capsys.readouterr().out
    assert "Skipped 1 already in the repository" in report and "Service/web" in report
    assert sorted(_documents(repo / "services.yaml")) == ["batch"]
    assert not (repo / "credentials.yaml").exists()
    assert DB_PASSWORD not in report


def test_unmarked_container_without_adopt_is_still_a_conflict(
    engine_client: docker.DockerClient, docker_peer: DockerPeer, tmp_path: Path
) -> None:
    _by_hand(engine_client, tmp_path)
    service = {
        "apiVersion": "metalform/v1",
        "kind": "Service",
        "metadata": {"name": "batch"},
        "spec": {"provider": "engine", "image": BUSYBOX_IMAGE, "state": "Stopped"},
    }
    plan = _engine().plan(_repo(tmp_path / "repo", docker_peer.url, json.dumps(service))).plan
    assert plan.has_errors
    assert any("not managed by Metalform" in d.message for d in plan.diagnostics)
