"""Secret env values and adoption of the docker provider, against a real dockerd."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from metalform.lab.docker import BUSYBOX_IMAGE, SERVICE_COMMAND, DockerPeer
from providers.docker import DockerProvider
from providers.docker.adopt import looks_secret
from providers.docker.mapping import SPEC_KEY
from reconciler.engine import Engine

pytestmark = [pytest.mark.peer]

TOKEN = "tok-3e9a61c0-not-for-plans"
ROTATED = "tok-7f02b4d8-not-for-plans"


@pytest.fixture
def engine_client(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    docker_peer.remove_containers()
    client = docker_peer.client()
    try:
        yield client
    finally:
        client.close()
        docker_peer.remove_containers()


def _repo(path: Path, url: str, **spec: object) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    documents = [
        {
            "kind": "Provider",
            "metadata": {"name": "engine"},
            "spec": {"type": "docker", "url": url},
        },
        {
            "kind": "Credential",
            "metadata": {"name": "token"},
            "spec": {"type": "token", "token": {"fromEnv": "DOCKER_TEST_TOKEN"}},
        },
        {
            "kind": "Service",
            "metadata": {"name": "svc"},
            "spec": {
                "provider": "engine",
                "image": BUSYBOX_IMAGE,
                "command": SERVICE_COMMAND,
                "networkMode": "none",
                **spec,
            },
        },
    ]
    text = "\n---\n".join(json.dumps({"apiVersion": "metalform/v1", **d}) for d in documents)
    (path / "repo.yaml").write_text(text + "\n")
    return path


def _engine() -> Engine:
    return Engine(factories={"docker": DockerProvider})


def test_secret_env_is_planned_by_fingerprint_and_rotation_recreates(
    docker_peer: DockerPeer,
    engine_client: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = _repo(tmp_path / "repo", docker_peer.url, env={"TOKEN": {"credential": "token"}})
    missing = _engine().plan(repo).plan
    assert missing.actions == [] and missing.has_errors
    assert any("DOCKER_TEST_TOKEN" in d.message for d in missing.diagnostics)

    monkeypatch.setenv("DOCKER_TEST_TOKEN", TOKEN)
    plan = _engine().plan(repo).plan
    assert [a.operation for a in plan.actions] == ["service.create"]
    env = plan.actions[0].params["env"]["TOKEN"]
    assert env["credential"] == "token" and env["fingerprint"].startswith("hmac-sha256:")
    assert _engine().apply(plan).ok
    container = engine_client.containers.get("svc")
    assert f"TOKEN={TOKEN}" in container.attrs["Config"]["Env"]
    assert (
        TOKEN not in container.labels[SPEC_KEY] and env["fingerprint"] in container.labels[SPEC_KEY]
    )
    assert _engine().plan(repo).plan.actions == []

    monkeypatch.setenv("DOCKER_TEST_TOKEN", ROTATED)
    rotated = _engine().plan(repo).plan
    assert [a.operation for a in rotated.actions] == ["service.recreate", "service.start"]
    change = next(c for c in rotated.changes if c.address == "Service/svc")
    assert [e.path for e in change.diff] == ["env.TOKEN"]
    assert TOKEN not in rotated.model_dump_json() and ROTATED not in rotated.model_dump_json()


def test_adoption_keeps_a_matching_container_and_recreates_a_differing_one(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    engine_client.containers.run(
        BUSYBOX_IMAGE, SERVICE_COMMAND, name="svc", detach=True, network_mode="none"
    )
    original = engine_client.containers.get("svc").id
    repo = _repo(tmp_path / "repo", docker_peer.url, adopt=True)
    plan = _engine().plan(repo).plan
    assert not plan.has_errors and plan.actions == []
    assert engine_client.containers.get("svc").id == original

    repo = _repo(tmp_path / "repo", docker_peer.url, adopt=True, env={"MODE": "x"})
    plan = _engine().plan(repo).plan
    assert [a.operation for a in plan.actions] == ["service.recreate", "service.start"]
    assert _engine().apply(plan).ok
    assert engine_client.containers.get("svc").id != original
    assert _engine().plan(repo).plan.actions == []


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("DB_PASSWORD", "x", True),
        ("api_key", "short", True),
        ("DATABASE_URL", "postgres://app:hunter2@db/app", True),
        ("SEED", "q8F3kd92LmQz7Xw1vB5nR0tYzP4", True),
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", False),
        ("MODE", "production", False),
        ("GREETING", "hello world, this is a long plain sentence", False),
    ],
)
def test_what_looks_like_a_secret(name: str, value: str, secret: bool) -> None:
    assert looks_secret(name, value) is secret
