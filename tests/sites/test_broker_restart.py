"""The broker restarted in the middle of an apply: it ends, bounded, and a new apply resumes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metalform.sites.config import from_values
from metalform.sites.dispatch import SiteRouter
from reconciler.apply import ApplyResult
from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus
from tests.sites.conftest import SITES, Sites, write_repository
from tests.sites.peers import TASK_KEY

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]
POWER_DELAY = 2.0
"""A reboot takes this long at the BMC: the broker restarts while one is in flight."""
BOUND = 45.0
"""The apply ends within this after the restart (its read deadline and heartbeats are shorter)."""


def test_a_broker_restarted_mid_apply_ends_the_apply_cleanly_and_it_resumes(
    sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    config = from_values(sites.redis.url, read_deadline=20.0)
    assert config is not None
    engine = Engine(
        Settings(timeout=5.0, retries=1, operation_timeout=20.0),
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        route=SiteRouter(config),
    )
    workers = [sites.worker(site) for site in SITES]
    try:
        repo = write_repository(tmp_path / "repo", sites)
        plan = engine.plan(repo).plan
        assert not plan.has_errors, [d.render() for d in plan.diagnostics]
        resets = [a for a in plan.actions if a.operation == "power.reset"]
        assert len(resets) == len(SITES)

        outcome: list[ApplyResult] = []
        applying = threading.Thread(target=lambda: outcome.append(engine.apply(plan)))
        applying.start()
        client = sites.redis.client()
        deadline = time.monotonic() + 30
        while not list(client.scan_iter(match="metalform:started:*")):
            assert time.monotonic() < deadline, "no action started"
            time.sleep(0.01)
        client.close()
        sites.redis.stop()  # no persistence: queues, reply lists and heartbeats are gone
        restarted = time.monotonic()
        sites.redis.start()
        applying.join(timeout=BOUND)
        assert not applying.is_alive(), f"the apply hung more than {BOUND:.0f}s after the restart"
        result = outcome[0]
        failed = [r for r in result.results.values() if r.status == ActionStatus.FAILED]
        # Every failure says which site and that the broker or its workers were lost; no traceback.
        for r in failed:
            assert r.error and r.error.startswith("site "), r.error
            assert "Traceback" not in r.error
            assert any(w in r.error for w in ("broker", "worker")), r.error
        elapsed = time.monotonic() - restarted

        # The workers reconnect by themselves; a new plan holds what is left, and applies.
        fresh = sites.redis.client()
        deadline = time.monotonic() + 30
        while len(SiteRouter(config, client=fresh).live_sites(fresh=True)) < len(SITES):
            assert time.monotonic() < deadline, "the workers did not come back to the broker"
            time.sleep(0.2)
        fresh.close()
        again = engine.plan(repo).plan
        assert not again.has_errors, [d.render() for d in again.diagnostics]
        assert engine.apply(again).ok
        assert engine.plan(repo).plan.actions == []
    finally:
        for worker in workers:
            worker.stop()
    print(f"apply ended {elapsed:.1f}s after the restart; {len(failed)} action(s) failed")
