"""No secret env value of a Service appears in anything Metalform writes (see test_secrets).

On a real dockerd: a container started by hand with a password in its environment is
imported, the password set, and the Service changed so that apply re-creates the container
with the secret resolved; then a new Service with a secret env value is created and its
secret rotated. Every surface is scanned for the secrets in all their encodings: what import
wrote and reported, plan (text, JSON, Markdown, saved file), show, apply, the DEBUG logs, and
the labels Metalform put on the containers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from metalform import cli
from metalform.lab.docker import BUSYBOX_IMAGE, SERVICE_COMMAND, DockerPeer
from tests.e2e.test_secrets import every_encoding

pytestmark = [pytest.mark.peer]

HAND_PASSWORD = "handPw-0b7d5c3e-never-print"
NEW_TOKEN = "apiTok-91fe2a6d-never-print"
ROTATED_TOKEN = "apiTok-5c0e77b1-never-print"
SECRETS = (HAND_PASSWORD, NEW_TOKEN, ROTATED_TOKEN)
FILL = "METALFORM_SECRET_LEGACY_DB_PASSWORD"

NEW_SERVICE = f"""\
---
apiVersion: metalform/v1
kind: Credential
metadata: {{name: api-token}}
spec: {{type: token, token: {{fromEnv: SCAN_API_TOKEN}}}}
---
apiVersion: metalform/v1
kind: Service
metadata: {{name: api}}
spec:
  provider: engine
  image: {BUSYBOX_IMAGE}
  command: {SERVICE_COMMAND!r}
  networkMode: none
  env: {{API_TOKEN: {{credential: api-token}}, LOG: info}}
"""


@pytest.fixture
def engine_client(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    docker_peer.remove_containers()
    client = docker_peer.client()
    try:
        yield client
    finally:
        client.close()
        docker_peer.remove_containers()


@pytest.fixture
def debug_logs() -> Iterator[None]:
    """The process's logging as `metalform --debug` sets it up (restored afterwards)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        for form in every_encoding("", secret).values():
            assert form not in text, f"a secret leaked into {where}"


def test_service_secrets_never_leave_the_engine(
    tmp_path: Path,
    docker_peer: DockerPeer,
    engine_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    debug_logs: None,
) -> None:
    engine_client.containers.run(
        BUSYBOX_IMAGE,
        SERVICE_COMMAND,
        name="legacy",
        detach=True,
        network_mode="none",
        environment={"DB_PASSWORD": HAND_PASSWORD, "MODE": "prod"},
    )
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "provider.yaml").write_text(
        "apiVersion: metalform/v1\nkind: Provider\nmetadata: {name: engine}\n"
        f'spec: {{type: docker, url: "{docker_peer.url}", timeout: 20}}\n'
    )
    monkeypatch.setenv("NO_COLOR", "1")
    outputs: list[tuple[str, str]] = []

    def run(*argv: str) -> int:
        code = cli.main(["--debug", *argv])
        out, err = capsys.readouterr()
        outputs.append((" ".join(argv), out + err))
        return code

    def plan_everything(tag: str) -> Path:
        for fmt in ("text", "json", "markdown"):
            assert run("plan", "-C", str(repo), "--format", fmt) == 0
        saved = tmp_path / f"plan-{tag}.json"
        assert run("plan", "-C", str(repo), "-o", str(saved)) == 0
        assert run("show", str(saved), "--format", "json") == 0
        return saved

    assert run("import", "docker", "engine", "-C", str(repo)) == 0
    assert FILL in outputs[-1][1]
    monkeypatch.setenv(FILL, HAND_PASSWORD)
    plan_everything("adopted")
    services = repo / "services.yaml"
    services.write_text(services.read_text().replace("MODE: prod", "MODE: debug"))
    with services.open("a") as stream:
        stream.write(NEW_SERVICE)
    monkeypatch.setenv("SCAN_API_TOKEN", NEW_TOKEN)
    assert run("apply", str(plan_everything("changed"))) == 0
    monkeypatch.setenv("SCAN_API_TOKEN", ROTATED_TOKEN)
    rotated = plan_everything("rotated")
    assert "service.recreate" in rotated.read_text()
    assert run("apply", str(rotated)) == 0

    # The secrets did reach the containers, and nothing else.
    env = {
        name: engine_client.containers.get(name).attrs["Config"]["Env"]
        for name in ("legacy", "api")
    }
    assert f"DB_PASSWORD={HAND_PASSWORD}" in env["legacy"]
    assert f"API_TOKEN={ROTATED_TOKEN}" in env["api"]
    for name in ("legacy", "api"):
        assert_clean(f"the labels of {name}", repr(engine_client.containers.get(name).labels))
    for path in sorted(tmp_path.rglob("*.*")):
        assert_clean(str(path), path.read_text(encoding="utf-8", errors="replace"))
    for argv, text in outputs:
        assert_clean(f"the output of `metalform {argv}`", text)
