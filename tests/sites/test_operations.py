"""Operations: workers per site in `metalform status`, `GET /api/v1/workers` and /metrics."""

from __future__ import annotations

from pathlib import Path

import falcon.testing
import pytest

from metalform.api import create_app
from metalform.cli import main
from metalform.server.config import config_from_mapping
from metalform.server.serve import site_router, watch_sites
from metalform.store import Store
from reconciler.engine import Engine
from tests.server.harness import (
    GITHUB_SECRET,
    GITLAB_SECRET,
    TOKENS,
    GitRemote,
    config_mapping,
    make_harness,
)
from tests.sites.conftest import SITES, Sites
from tests.sites.peers import TASK_KEY, WorkerProcess

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]


def test_status_shows_the_workers_of_each_site(
    sites: Sites,
    workers: dict[str, WorkerProcess],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    code = main(["status", "-C", str(tmp_path), "--broker", sites.redis.url])
    out = capsys.readouterr()
    assert code == 1  # no state store in tmp_path: said after the workers
    assert "no state database" in out.err
    for site, worker in workers.items():
        assert f"site {site}: queued 0" in out.out
        assert f"{site}@" in out.out and f".{worker.process.pid}" in out.out  # type: ignore[union-attr]
    assert "in flight" in out.out


def test_the_api_and_metrics_show_workers_per_site(
    sites: Sites,
    workers: dict[str, WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    monkeypatch.setenv("TEST_GITHUB_SECRET", GITHUB_SECRET)
    monkeypatch.setenv("TEST_GITLAB_SECRET", GITLAB_SECRET)
    mapping = config_mapping(GitRemote(tmp_path), tmp_path, None, broker={"url": sites.redis.url})
    config = config_from_mapping(mapping, base_dir=tmp_path, environ={})
    assert config.sites is not None and config.sites.label == "site"
    engine = Engine(route=site_router(config))
    store = Store.open(config.database)
    app = create_app(config, engine, store)
    watch_sites(engine, app.service.metrics)
    client = falcon.testing.TestClient(app)
    try:
        headers = {"Authorization": f"Bearer {TOKENS['viewer']}"}
        body = client.simulate_get("/api/v1/workers", headers=headers).json
        assert body["configured"] is True
        by_site = {s["site"]: s for s in body["sites"]}
        assert set(by_site) >= set(SITES)
        for site in SITES:
            (worker,) = by_site[site]["workers"]
            assert worker["site"] == site
            assert worker["secondsSinceHeartbeat"] < 15
            assert worker["inFlight"] == 0
        app.service.metrics.site_task("east", "read", 0.01, True)
        metrics = client.simulate_get("/metrics").text
        assert 'metalform_site_workers{site="east"} 1.0' in metrics
        assert 'metalform_site_queue_depth{site="west"} 0.0' in metrics
        assert 'metalform_site_tasks_total{result="ok",site="east",task="read"} 1.0' in metrics
        assert client.simulate_get("/api/v1/workers").status_code == 401
    finally:
        app.stopping.set()
        app.hub.close()
        app.service.close(10)
        store.close()


def test_without_a_broker_the_api_says_no_workers_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for harness in make_harness(tmp_path, monkeypatch, forge=None):
        body = harness.get("/api/v1/workers").json
        assert body == {"configured": False, "sites": []}
