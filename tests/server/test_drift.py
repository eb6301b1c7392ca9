"""The background loop: drift checks raise drift.detected, polls plan new commits, stop is clean."""

from __future__ import annotations

import threading
import time

from metalform.events import BusEvent
from metalform.server.drift import Scheduler
from tests.server.harness import Harness, wait_for


def test_drift_loop_detects_drift_and_shows_it_in_status(harness: Harness) -> None:
    received: list[BusEvent] = []
    harness.service.bus.subscribe(received.append, frozenset({"drift.detected"}))
    scheduler = Scheduler(harness.service, poll_interval=0, drift_interval=0.2).start()
    try:
        wait_for(lambda: harness.events("drift.detected"), timeout=30, what="drift.detected")
    finally:
        scheduler.stop()
    assert not scheduler.running
    event = harness.events("drift.detected")[0]
    assert event.payload["addresses"] == ["Server/a1", "Server/b2"]
    assert received and received[0].payload["resources"] == 2
    harness.idle()
    status = harness.get("/api/v1/status").json
    assert status["drift"]["detected"] is True
    assert status["drift"]["resources"] == 2
    assert status["drift"]["addresses"] == ["Server/a1", "Server/b2"]
    assert status["drift"]["lastCheckPlanId"] is not None


def test_no_drift_no_event(harness: Harness) -> None:
    applied = harness.apply(harness.plan()["id"])
    assert applied["status"] == "succeeded"
    record = harness.service.check_drift()
    harness.idle()
    assert harness.store.get_plan(record.id).action_count == 0
    assert harness.events("drift.detected") == []
    status = harness.get("/api/v1/status").json
    assert status["drift"]["detected"] is False
    assert status["drift"]["lastCheckPlanId"] == record.id


def test_poll_plans_new_commits_once(harness: Harness) -> None:
    scheduler = Scheduler(harness.service, poll_interval=0.1, drift_interval=0).start()
    try:
        wait_for(lambda: harness.get("/api/v1/history").json["items"], what="the first plan")
        sha = harness.remote.commit("polled")
        harness.remote.push("main")
        wait_for(
            lambda: (
                harness.get("/api/v1/status").json["lastPlannedRevision"] == sha
                and harness.service.workers.in_flight == 0
            ),
            what="the poll plan",
        )
        time.sleep(0.3)  # a few more polls: the same head is not planned again
    finally:
        scheduler.stop()
    harness.idle()
    revisions = [i["revision"] for i in harness.get("/api/v1/history").json["items"]]
    assert revisions == [sha, harness.remote.main]
    # new commits are not drift, even when they change what the fleet should be
    assert harness.events("drift.detected") == []
    assert harness.get("/readyz", role=None).status_code == 200


def test_stop_returns_promptly_with_long_intervals(harness: Harness) -> None:
    scheduler = Scheduler(
        harness.service, poll_interval=3600, drift_interval=3600, first_delay=3600
    ).start()
    started = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - started < 1
    assert not any(t.name == "metalform-scheduler" for t in threading.enumerate())


def test_a_failing_tick_does_not_stop_the_loop(harness: Harness) -> None:
    harness.service.tracker.url = str(harness.remote.bare) + "-gone"
    harness.service.tracker._open = _broken
    scheduler = Scheduler(harness.service, poll_interval=0.05, drift_interval=0).start()
    try:
        wait_for(lambda: harness.service.tracker.last_fetch is not None, what="a fetch")
        time.sleep(0.2)
        assert scheduler.running
    finally:
        scheduler.stop()
    assert harness.get("/readyz", role=None).status_code == 503


def _broken() -> None:
    from metalform.server.repository import RepositoryUnavailable

    raise RepositoryUnavailable("git fetch failed: remote gone")
