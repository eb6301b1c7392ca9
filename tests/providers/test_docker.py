"""The docker provider and the Service planner end to end, against a real dockerd.

Each test writes a desired-state repository (a docker Provider and some Services), plans and
applies it with the Engine, and checks the engine itself through the docker SDK. Every test
starts and ends with an empty engine: discovery would otherwise plan the deletion of another
test's containers.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import pytest

from metalform.lab.docker import BUSYBOX_IMAGE, SERVICE_COMMAND, DockerPeer
from providers.docker import DockerProvider
from providers.docker.mapping import (
    MANAGED_KEY,
    RESOURCE_KEY,
    health,
    live_state,
    port_bindings,
)
from reconciler.concurrency import Limiter
from reconciler.engine import Engine
from reconciler.errors import MetalformError, PermanentError
from reconciler.load import load
from reconciler.model import Action, ActionStatus, Health, LiveResource
from reconciler.plan import PlanOptions, make_plan
from reconciler.provider import Discovering, Provider, ProviderContext

SECOND_IMAGE = "local/busybox:2"


@pytest.fixture
def engine_client(docker_peer: DockerPeer) -> Iterator[docker.DockerClient]:
    """An SDK client of the test engine, which is empty before and after the test."""
    docker_peer.remove_containers()
    client = docker_peer.client()
    try:
        yield client
    finally:
        client.close()
        docker_peer.remove_containers()


def service_yaml(name: str, image: str = BUSYBOX_IMAGE, **fields: Any) -> str:
    spec = {
        "provider": "engine",
        "image": image,
        "command": SERVICE_COMMAND,
        "networkMode": "none",
        **fields,
    }
    import json

    # JSON is YAML: no quoting surprises for commands and images.
    return json.dumps(
        {"apiVersion": "metalform/v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
    )


def write_repo(path: Path, url: str, *services: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "provider.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: metalform/v1
        kind: Provider
        metadata: {{name: engine}}
        spec: {{type: docker, url: "{url}", timeout: 20}}
        """)
    )
    (path / "services.yaml").write_text("\n---\n".join(services) + "\n")
    return path


def engine() -> Engine:
    return Engine(factories={"docker": DockerProvider})


def converge(repo: Path) -> None:
    """Plan and apply; every action must succeed and a second plan must be empty."""
    eng = engine()
    plan = eng.plan(repo).plan
    assert not plan.has_errors, plan.diagnostics
    result = eng.apply(plan)
    assert result.ok, {r.operation: r.error for r in result.results.values()}
    again = eng.plan(repo).plan
    assert again.actions == [], [(a.address, a.operation) for a in again.actions]
    assert not again.has_changes


def containers(client: docker.DockerClient) -> dict[str, Any]:
    return {c.name: c for c in client.containers.list(all=True)}


# -- end to end through the engine ----------------------------------------------------------


def test_create_converges_and_marks_containers(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        docker_peer.url,
        service_yaml(
            "web",
            env={"MODE": "prod"},
            labels={"team": "infra"},
            restartPolicy="unless-stopped",
            ports=["8080:80"],
            volumes=[f"{tmp_path}:/data:ro"],
        ),
        service_yaml("batch", state="Stopped"),
    )
    plan = engine().plan(repo).plan
    assert [(a.address, a.operation) for a in plan.actions] == [
        ("Service/batch", "service.create"),
        ("Service/web", "service.create"),
    ]
    assert all(
        a.provider == "docker" and a.endpoint == f"docker:{docker_peer.url}" for a in plan.actions
    )
    assert plan.summary.create == 2
    converge(repo)

    found = containers(engine_client)
    web, batch = found["web"], found["batch"]
    assert web.status == "running" and batch.status == "created"
    assert web.labels[MANAGED_KEY] == "true" and web.labels[RESOURCE_KEY] == "Service/web"
    assert web.labels["team"] == "infra"
    assert "MODE=prod" in web.attrs["Config"]["Env"]
    assert web.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert web.attrs["HostConfig"]["Binds"] == [f"{tmp_path}:/data:ro"]
    assert web.attrs["Config"]["Cmd"] == SERVICE_COMMAND


def test_image_and_env_change_recreates_then_starts(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    engine_client.images.get(BUSYBOX_IMAGE).tag(*SECOND_IMAGE.split(":"))
    repo = tmp_path / "repo"
    write_repo(repo, docker_peer.url, service_yaml("app", env={"LEVEL": "info", "OLD": "1"}))
    converge(repo)
    before = containers(engine_client)["app"].id

    write_repo(
        repo, docker_peer.url, service_yaml("app", image=SECOND_IMAGE, env={"LEVEL": "debug"})
    )
    plan = engine().plan(repo).plan
    assert [(a.operation, a.depends_on, a.disruptive) for a in plan.actions] == [
        ("service.recreate", (), True),
        ("service.start", (1,), False),
    ]
    diff = {d.path: (d.before, d.after) for d in plan.changes[0].diff}
    assert diff == {
        "image": (BUSYBOX_IMAGE, SECOND_IMAGE),
        "env.LEVEL": ("info", "debug"),
        "env.OLD": ("1", None),
    }
    result = engine().apply(plan)
    assert result.ok, [r.error for r in result.results.values()]

    after = containers(engine_client)["app"]
    assert after.id != before and after.status == "running"
    assert after.attrs["Config"]["Image"] == SECOND_IMAGE
    assert "LEVEL=debug" in after.attrs["Config"]["Env"]
    assert not any(e.startswith("OLD=") for e in after.attrs["Config"]["Env"])
    assert engine().plan(repo).plan.actions == []


def test_stop_and_start(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, docker_peer.url, service_yaml("toggle"))
    converge(repo)
    original = containers(engine_client)["toggle"].id

    write_repo(repo, docker_peer.url, service_yaml("toggle", state="Stopped"))
    plan = engine().plan(repo).plan
    assert [(a.operation, a.disruptive) for a in plan.actions] == [("service.stop", True)]
    converge(repo)
    assert containers(engine_client)["toggle"].status == "exited"

    write_repo(repo, docker_peer.url, service_yaml("toggle", state="Running"))
    assert [a.operation for a in engine().plan(repo).plan.actions] == ["service.start"]
    converge(repo)
    toggled = containers(engine_client)["toggle"]
    assert toggled.status == "running"
    assert toggled.id == original  # started and stopped in place, never re-created


def test_service_removed_from_git_is_deleted(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, docker_peer.url, service_yaml("keep"), service_yaml("gone"))
    converge(repo)
    kept = containers(engine_client)["keep"].id

    write_repo(repo, docker_peer.url, service_yaml("keep"))
    plan = engine().plan(repo).plan
    assert [(a.address, a.operation, a.disruptive) for a in plan.actions] == [
        ("Service/gone", "service.delete", True)
    ]
    assert plan.summary.delete == 1
    assert plan.resources["Service/gone"]["spec"]["provider"] == "engine"
    result = engine().apply(plan)
    assert result.ok, [r.error for r in result.results.values()]
    assert set(containers(engine_client)) == {"keep"}
    assert containers(engine_client)["keep"].id == kept
    assert engine().plan(repo).plan.actions == []


def test_unmanaged_container_is_left_alone(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    # Someone's own containers: one holds a Service's name, one is not in Git at all.
    squatter = engine_client.containers.create(
        BUSYBOX_IMAGE, SERVICE_COMMAND, name="web", network_mode="none"
    )
    bystander = engine_client.containers.create(
        BUSYBOX_IMAGE, SERVICE_COMMAND, name="bystander", network_mode="none"
    )
    repo = write_repo(tmp_path / "repo", docker_peer.url, service_yaml("web"))
    plan = engine().plan(repo).plan
    assert plan.actions == []  # no create over it, no delete of either
    errors = [d for d in plan.diagnostics if d.severity.value == "error"]
    assert [d.address for d in errors] == ["Service/web"]
    assert "not managed by Metalform" in errors[0].message
    with pytest.raises(MetalformError, match="the plan has errors"):
        engine().apply(plan)

    # Even a stale plan's create cannot replace it: the engine refuses the name, we stop there.
    provider = DockerProvider(context(docker_peer))
    resources = load(repo).resources
    provider.context.resources = resources
    create = Action(
        id=1,
        address="Service/web",
        operation="service.create",
        provider="docker",
        params={"image": BUSYBOX_IMAGE, "networkMode": "none", "start": True},
    )
    with pytest.raises(PermanentError, match="already exists"):
        provider.execute(create, resources["Service/web"])
    provider.close()

    left = containers(engine_client)
    assert left["web"].id == squatter.id and left["web"].status == "created"
    assert left["bystander"].id == bystander.id
    assert MANAGED_KEY not in left["web"].labels


def test_engine_down_is_unreachable_not_drift(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    missing = f"unix://{tmp_path}/nobody-listens.sock"
    repo = write_repo(tmp_path / "repo", missing, service_yaml("web"))
    started = time.monotonic()
    run = engine().plan(repo)
    assert time.monotonic() - started < 10
    plan = run.plan
    assert plan.actions == [] and plan.changes == []
    assert plan.summary.unreachable == 1 and not plan.has_changes
    live = run.gathered.live["Service/web"]
    assert live.health is Health.UNREACHABLE
    assert live.error and "did not answer" in live.error
    assert any("cannot read the Docker engine" in d.message for d in plan.diagnostics)


# -- the provider directly -------------------------------------------------------------------


class CountingLimiter(Limiter):
    """Records the endpoint of every request slot taken."""

    def __init__(self) -> None:
        super().__init__(parallelism=4, per_endpoint=2)
        self.endpoints: list[str] = []

    @contextmanager
    def slot(self, endpoint: str) -> Iterator[None]:
        self.endpoints.append(endpoint)
        with super().slot(endpoint):
            yield


def context(peer: DockerPeer, limiter: Limiter | None = None) -> ProviderContext:
    def no_credentials(name: str) -> Any:
        raise AssertionError(f"the docker provider asked for Credential {name}")

    return ProviderContext(limiter=limiter or Limiter(), credential=no_credentials, timeout=20.0)


@contextmanager
def counted_requests(provider: DockerProvider, url: str) -> Iterator[list[str]]:
    """Every HTTP request the provider's client of `url` makes, as `METHOD path`."""
    seen: list[str] = []

    def record(response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        seen.append(f"{request.method} {request.path_url.split('?')[0]}")

    provider.engine(url, 20.0).on_client = lambda client: client.api.hooks["response"].append(
        record
    )
    yield seen


def test_one_listing_per_engine_and_every_request_in_a_slot(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    names = [f"svc-{i}" for i in range(6)]
    repo = write_repo(tmp_path / "repo", docker_peer.url, *(service_yaml(n) for n in names[:5]))
    converge(repo)
    resources = load(repo).resources
    services = [resources[f"Service/{n}"] for n in names[:5]]

    limiter = CountingLimiter()
    provider = DockerProvider(context(docker_peer, limiter))
    provider.context.resources = resources
    assert isinstance(provider, Provider) and isinstance(provider, Discovering)
    with counted_requests(provider, docker_peer.url) as seen:
        live = provider.read(services)
        assert all(live[s.address].exists for s in services)
        found = provider.discover([resources["Provider/engine"]])
        assert set(found) == {s.address for s in services}
        # Read lists once (after the client asked for the API version, before this hook was
        # attached); discovery reuses that listing.
        assert seen == [f"GET /v{api_version(provider)}/containers/json"]
        seen.clear()
        provider.read(services)
        assert seen == [f"GET /v{api_version(provider)}/containers/json"]
    # Two listings; the client's version request was made in the first one's slot.
    assert len(limiter.endpoints) == 2
    assert set(limiter.endpoints) == {f"docker:{docker_peer.url}"}
    provider.close()


def api_version(provider: DockerProvider) -> str:
    client = provider.engine(next(iter(provider._engines)))._client
    assert client is not None
    return str(client.api.api_version)


def test_plan_lists_each_engine_once(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = write_repo(
        tmp_path / "repo", docker_peer.url, *(service_yaml(f"many-{i}") for i in range(8))
    )
    listings: list[str] = []

    def tracking(ctx: ProviderContext) -> DockerProvider:
        provider = DockerProvider(ctx)
        provider.engine(docker_peer.url, 20.0).on_client = lambda client: client.api.hooks[
            "response"
        ].append(lambda r, *a, **k: listings.append(r.request.path_url))
        return provider

    plan = Engine(factories={"docker": tracking}).plan(repo).plan
    assert len(plan.actions) == 8
    # One listing of the managed containers, and one query for the names of the eight absent
    # Services (is another container holding one?): two requests, whatever the count.
    assert sum("/containers/json" in p for p in listings) == 2
    converge(repo)
    listings.clear()
    assert Engine(factories={"docker": tracking}).plan(repo).plan.actions == []
    assert sum("/containers/json" in p for p in listings) == 1


def test_exited_container_is_degraded(
    docker_peer: DockerPeer, engine_client: docker.DockerClient, tmp_path: Path
) -> None:
    repo = write_repo(
        tmp_path / "repo",
        docker_peer.url,
        service_yaml("crash", command=["sh", "-c", "exit 3"], state="Stopped"),
    )
    resources = load(repo).resources
    provider = DockerProvider(context(docker_peer))
    provider.context.resources = resources
    create = Action(
        id=1,
        address="Service/crash",
        operation="service.create",
        provider="docker",
        params={
            "image": BUSYBOX_IMAGE,
            "command": ["sh", "-c", "exit 3"],
            "networkMode": "none",
            "start": True,
        },
    )
    provider.execute(create, resources["Service/crash"])
    deadline = time.monotonic() + 10
    live = provider.read([resources["Service/crash"]])["Service/crash"]
    while live.state["state"] != "Stopped" and time.monotonic() < deadline:
        time.sleep(0.05)
        live = provider.read([resources["Service/crash"]])["Service/crash"]
    assert live.state["state"] == "Stopped"
    assert live.health is Health.DEGRADED and live.facts["exitCode"] == 3
    provider.close()


# -- pure parts ------------------------------------------------------------------------------


def test_port_bindings_and_listing_mapping() -> None:
    assert port_bindings(["8080:80/tcp", "53/udp", "9000:9000"]) == {
        "80/tcp": 8080,
        "53/udp": None,
        "9000/tcp": 9000,
    }
    summary = {
        "Image": "img:1",
        "State": "exited",
        "Status": "Exited (0) 2 minutes ago",
        "HostConfig": {"NetworkMode": "host"},
        "Labels": {"metalform.spec": '{"env":{"A":"1"},"ports":["1:2/tcp"]}'},
    }
    assert live_state(summary) == {
        "image": "img:1",
        "state": "Stopped",
        "networkMode": "host",
        "env.A": "1",
        "ports": ["1:2/tcp"],
    }
    assert health(summary) is Health.HEALTHY
    assert health({**summary, "Status": "Exited (137) 1 second ago"}) is Health.DEGRADED
    assert health({"State": "running", "Status": "Up 3 minutes (unhealthy)"}) is Health.DEGRADED
    assert health({"State": "restarting", "Status": "Restarting (1)"}) is Health.PROGRESSING


def test_deleted_service_plan_carries_what_apply_needs(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", "unix:///run/engine.sock", service_yaml("stay"))
    desired = load(repo)
    gone = LiveResource(
        address="Service/old",
        state={"image": BUSYBOX_IMAGE, "state": "Running", "networkMode": "none"},
        facts={
            "engine": "unix:///run/engine.sock",
            "document": {
                "apiVersion": "metalform/v1",
                "kind": "Service",
                "metadata": {"name": "old"},
                "spec": {"provider": "engine", "image": BUSYBOX_IMAGE},
            },
        },
    )
    live = {
        "Service/stay": LiveResource(
            address="Service/stay",
            state={
                "image": BUSYBOX_IMAGE,
                "state": "Running",
                "networkMode": "none",
                "command": SERVICE_COMMAND,
            },
        )
    }
    plan = make_plan(
        desired, live, PlanOptions(now=datetime(2026, 1, 1, tzinfo=UTC)), {"Service/old": gone}
    )
    assert [(a.address, a.operation, a.disruptive, a.provider, a.params) for a in plan.actions] == [
        ("Service/old", "service.delete", True, "docker", {"engine": "unix:///run/engine.sock"})
    ]
    assert plan.actions[0].status is ActionStatus.PLANNED
    assert plan.resources["Service/old"]["metadata"] == {"name": "old"}
    assert [c.action.value for c in plan.changes] == ["noop", "delete"]
