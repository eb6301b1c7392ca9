"""A worker SIGKILLed in the middle of a reboot: the task comes back, the reboot is not redone."""

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
from tests.sites.conftest import Sites, write_repository
from tests.sites.peers import TASK_KEY

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]
POWER_DELAY = 1.5
"""A reboot takes this long at the BMC: long enough to kill the worker waiting for it."""
VISIBILITY = 3.0


def test_a_worker_killed_mid_reboot_does_not_reboot_twice(
    sites: Sites, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    config = from_values(sites.redis.url)
    assert config is not None
    engine = Engine(
        Settings(timeout=5.0, retries=1, operation_timeout=20.0),
        clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        route=SiteRouter(config),
    )
    first = sites.worker("east", visibility_timeout=VISIBILITY)
    repo = write_repository(tmp_path / "repo", sites)
    plan = engine.plan(repo, targets=["Server/east-3"]).plan
    reset = next(a for a in plan.actions if a.operation == "power.reset")
    assert reset.disruptive

    outcome: list[ApplyResult] = []
    applying = threading.Thread(target=lambda: outcome.append(engine.apply(plan)))
    applying.start()
    client = sites.redis.client()
    deadline = time.monotonic() + 30
    while not list(client.scan_iter(match=f"metalform:started:*:{reset.id}")):
        assert time.monotonic() < deadline, "the reboot never started"
        time.sleep(0.01)
    time.sleep(0.3)  # the reset is accepted; the worker waits for the BMC to come back
    first.kill()
    second = sites.worker("east", visibility_timeout=VISIBILITY)
    try:
        applying.join(timeout=90)
        assert not applying.is_alive(), "the apply hung"
    finally:
        second.stop()
    result = outcome[0]
    assert result.ok, [(r.operation, r.error) for r in result.results.values()]
    log = (sites.tmp / "worker-east.log").read_text()
    assert f"#{reset.id} Server/east-3 power.reset was already done" in log
    system = sites.bmcs["east"].system_document("east-3")
    assert system["PowerState"] == "On"
