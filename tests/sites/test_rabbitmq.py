"""RabbitMQ as the broker (real rabbitmq-server), Redis for replies and heartbeats: a plan and
an apply over two sites match one process, and status counts the queues on RabbitMQ."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.cli import main
from metalform.sites.config import from_values
from metalform.sites.dispatch import SiteRouter
from metalform.sites.workers import amqp_queue_depths
from reconciler.engine import Engine
from reconciler.errors import MetalformError
from reconciler.model.credentials import SecretRef
from tests.fixtures.redfish import LAB_PASSWORD
from tests.sites.conftest import (
    NOW,
    SECRET_ENV,
    SETTINGS,
    SITES,
    Sites,
    baseline,
    comparable,
    single_process_plan,
)
from tests.sites.peers import TASK_KEY, RabbitPeer, WorkerProcess

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]
RABBIT_PASSWORD_VAR = "TEST_RABBIT_PASSWORD"


@pytest.fixture(scope="module")
def rabbit(sites: Sites) -> Iterator[RabbitPeer]:
    try:
        peer = RabbitPeer(sites.tmp / "rabbitmq").start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield peer
    peer.stop()


@pytest.fixture(scope="module")
def workers(sites: Sites, rabbit: RabbitPeer) -> Iterator[dict[str, WorkerProcess]]:
    started: dict[str, WorkerProcess] = {}
    try:
        for site in SITES:
            started[site] = WorkerProcess(
                site=site,
                broker=rabbit.url,
                env={SECRET_ENV[site]: LAB_PASSWORD, RABBIT_PASSWORD_VAR: rabbit.password},
                log=sites.tmp / f"rabbit-worker-{site}.log",
                args=(
                    "--broker-password-env", RABBIT_PASSWORD_VAR,
                    "--broker-backend", sites.redis.url,
                ),
            ).start(sites.redis.client())  # fmt: skip
        yield started
    finally:
        for worker in started.values():
            worker.stop()


def rabbit_router(sites: Sites, rabbit: RabbitPeer, monkeypatch: pytest.MonkeyPatch) -> SiteRouter:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    monkeypatch.setenv(RABBIT_PASSWORD_VAR, rabbit.password)
    config = from_values(
        rabbit.url,
        password=SecretRef(from_env=RABBIT_PASSWORD_VAR),
        backend=sites.redis.url,
    )
    assert config is not None
    return SiteRouter(config)


def test_a_plan_and_apply_through_rabbitmq_match_one_process(
    sites: Sites,
    rabbit: RabbitPeer,
    workers: dict[str, WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, local = baseline(sites, tmp_path, monkeypatch)

    router = rabbit_router(sites, rabbit, monkeypatch)
    engine = Engine(SETTINGS, clock=lambda: NOW, route=router)
    remote = engine.plan(repo).plan
    assert not remote.has_errors, [d.render() for d in remote.diagnostics]
    assert comparable(remote) == comparable(local)
    result = engine.apply(remote)
    assert result.ok, [(r.address, r.operation, r.error) for r in result.results.values()]
    assert not single_process_plan(repo, monkeypatch).actions  # converged

    # The tasks went through RabbitMQ, not Redis: no queue list was ever made there.
    assert not list(sites.redis.client().scan_iter(match="site-*"))
    deadline = time.monotonic() + 15  # the counts come with the next heartbeat (every 5 s)
    while True:
        overview = {s["site"]: s for s in router.overview()}
        assert set(overview) == set(SITES)
        assert all(overview[site]["queueDepth"] == 0 for site in SITES)
        if all(overview[site]["workers"][0]["processed"] > 0 for site in SITES):
            break
        assert time.monotonic() < deadline, overview
        time.sleep(0.5)


def test_status_counts_the_queues_on_rabbitmq(
    sites: Sites,
    rabbit: RabbitPeer,
    workers: dict[str, WorkerProcess],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    monkeypatch.setenv(RABBIT_PASSWORD_VAR, rabbit.password)
    # A task waits in a queue no worker serves: RabbitMQ counts it.
    router = rabbit_router(sites, rabbit, monkeypatch)
    router.app.send_task("metalform.sites.read", args=[{}], queue="site-east-idle")
    assert router.overview()  # the workers' sites
    args = ["--broker", rabbit.url, "--broker-password-env", RABBIT_PASSWORD_VAR]
    code = main(["status", "-C", str(tmp_path), *args, "--broker-backend", sites.redis.url])
    out = capsys.readouterr()
    assert code == 1, out.err  # no state store in tmp_path: said after the workers
    for site in SITES:
        assert f"site {site}: queued 0" in out.out
    assert rabbit.password not in out.out + out.err
    assert amqp_queue_depths(router.app, ["east-idle", "nowhere"]) == {"east-idle": 1, "nowhere": 0}

    # Without a Redis for the replies, a RabbitMQ broker is refused with the reason.
    code = main(["status", "-C", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code != 0 and "needs a Redis for replies" in err and "--broker-backend" in err


def test_a_backend_url_with_a_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    with pytest.raises(MetalformError, match="backend URL must not carry a password"):
        from_values("amqp://u@127.0.0.1//", backend="redis://:hunter2-secret@127.0.0.1:1/0")
