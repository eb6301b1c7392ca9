"""Event streams cost no request capacity: hundreds of followers and `/healthz` stays fast;
caps per server and per token; strict Last-Event-ID; a clean SIGTERM with streams open."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from metalform.api.resources.applies import EventStream
from metalform.store import Store
from tests.server.harness import TOKENS, GitRemote, Harness, make_harness, wait_for
from tests.server.serving import (
    Followers,
    ServeProcess,
    healthz_latencies,
    percentile,
    write_config,
)

pytestmark = pytest.mark.timeout(300)

MANY = "eventStreams: {max: 1000, perClient: 1000}"


def running_apply(server: ServeProcess, fleet: Path) -> str:
    """An apply that stays running: the fleet's first action never returns."""
    plan = server.plan()
    assert plan["status"] == "succeeded", plan
    started = server.post(f"/api/v1/plans/{plan['id']}/apply")
    assert started.status_code == 202, started.text
    wait_for(fleet.with_suffix(".blocked").exists, 30, "the apply to block")
    return str(started.json()["applyId"])


def status(server: ServeProcess, path: str) -> int:
    with server.get(path, stream=True) as response:
        return response.status_code


def test_200_followers_leave_healthz_fast_and_sigterm_ends_them_cleanly(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url, MANY)
    fleet = tmp_path / "fleet.json"
    with ServeProcess.memory(config, fleet, block_at=1) as server:
        apply_id = running_apply(server, fleet)
        followers = Followers(server.base, f"/api/v1/applies/{apply_id}/events", TOKENS["viewer"])
        try:
            followers.open(200)
            wait_for(lambda: followers.streaming() == 200, 60, "200 streams")
            # events keep coming while /healthz is measured: every follower gets each one
            with Store.open(f"sqlite:///{tmp_path / 'state' / 'metalform.db'}") as store:
                marker = store.append_event(
                    "action.updated", apply_id=apply_id, payload={"note": "from the test"}
                )
                latencies = healthz_latencies(server.base, 200)
            wait_for(
                lambda: all(f"id: {marker.id}\n" in text for text in followers.texts()),
                10,
                "the event to reach every follower",
            )
            p95 = percentile(latencies, 95)
            assert p95 < 0.100, f"/healthz p95 {p95 * 1000:.1f} ms with 200 followers"
            fleet.with_suffix(".release").touch()  # the apply may finish in the grace period
            started = time.monotonic()
            assert server.terminate(30) == 0
            assert time.monotonic() - started < 15
            # each stream was ended properly (the last chunk of a chunked body)
            wait_for(
                lambda: all(t.endswith("0\r\n\r\n") for t in followers.texts()),
                10,
                "every stream to end",
            )
        finally:
            followers.close()
    log = server.log()
    assert "stopped" in log
    assert "Traceback" not in log and "ERROR" not in log


def test_past_the_server_cap_a_follower_gets_503(tmp_path: Path) -> None:
    remote = GitRemote(tmp_path)
    config = write_config(tmp_path / "server.yaml", remote.url, MANY)
    fleet = tmp_path / "fleet.json"
    with ServeProcess.memory(config, fleet, block_at=1) as server:
        apply_id = running_apply(server, fleet)
        path = f"/api/v1/applies/{apply_id}/events"
        followers = Followers(server.base, path, TOKENS["viewer"])
        try:
            followers.open(1000)
            wait_for(lambda: followers.streaming() == 1000, 120, "1000 streams")
            refused = server.get(path)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "10"
            assert refused.json()["error"]["code"] == "TOO_MANY_STREAMS"
            assert server.get("/healthz").status_code == 200
        finally:
            followers.close()
        # closed streams free their places
        wait_for(lambda: status(server, path) == 200, 30, "a place to free up")
        fleet.with_suffix(".release").touch()
        assert server.terminate() == 0
    assert "Traceback" not in server.log()


@pytest.fixture
def capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    yield from make_harness(
        tmp_path, monkeypatch, forge=None, eventStreams={"max": 3, "perClient": 2}
    )


def test_caps_per_token_and_per_server(capped: Harness) -> None:
    applied = capped.apply(capped.plan()["id"])
    path = f"/api/v1/applies/{applied['id']}/events"
    hub = capped.app.hub
    held = [hub.subscribe(applied["id"], "token viewer") for _ in range(2)]
    refused = capped.get(path, role="viewer")
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "10"
    assert "limit per client" in refused.json["error"]["message"]
    # another token still has room; its stream (of a finished apply) ends at once
    assert capped.get(path, role="operator").status_code == 200
    held.append(hub.subscribe(applied["id"], "token planner"))
    refused = capped.get(path, role="operator")
    assert refused.status_code == 503 and "its limit" in refused.json["error"]["message"]
    for sub in held:
        hub.unsubscribe(sub)
    assert hub.active == 0
    assert capped.get(path, role="viewer").status_code == 200


BAD_IDS = ["x", "²", "٣", "5" * 5000, "9" * 19, "-1", "+1", "1.0", "0x10", "1e3", "1 2"]


@pytest.mark.parametrize("where", ["header", "query"])
def test_last_event_id_is_strictly_digits(harness: Harness, where: str) -> None:
    applied = harness.apply(harness.plan()["id"])
    path = f"/api/v1/applies/{applied['id']}/events"

    def get(value: str) -> object:
        if where == "header":
            return harness.get(path, headers={"Last-Event-ID": value})
        return harness.get(path, params={"lastEventId": value})

    for value in BAD_IDS:
        result = get(value)
        assert result.status_code == 400, value  # type: ignore[attr-defined]
        error = result.json["error"]  # type: ignore[attr-defined]
        assert error["code"] == "BAD_REQUEST" and "ASCII digits" in error["message"]
    assert harness.app.hub.active == 0
    ok = get("9" * 18)
    assert ok.status_code == 200  # type: ignore[attr-defined]
    assert "id:" not in ok.text  # type: ignore[attr-defined]  # nothing after that id
    assert "event: apply.succeeded" in get("0").text  # type: ignore[attr-defined]


def test_a_finished_applys_stream_ends_after_replaying(harness: Harness) -> None:
    applied = harness.apply(harness.plan()["id"])
    started = time.monotonic()
    text = harness.get(f"/api/v1/applies/{applied['id']}/events").text
    assert time.monotonic() - started < 2
    last = [b for b in text.split("\n\n") if b.startswith("id:")][-1]
    assert "event: apply.succeeded" in last
    assert json.loads(last.split("data: ", 1)[1])["applyId"] == applied["id"]
    assert harness.app.hub.active == 0


def test_followers_joining_while_events_are_written_miss_none(harness: Harness) -> None:
    """Replay from the store up to the hub's cursor, then the hub: no gap, no repeat."""
    plan = harness.plan()
    applied = harness.store.create_apply(plan["id"])  # pending; events written by hand
    hub, store = harness.app.hub, harness.store
    received: list[list[int]] = []

    def follow() -> None:
        sub = hub.subscribe(applied.id, "test")
        stream = EventStream(store, hub, sub, 0, threading.Event())
        ids = [
            int(chunk.split(b"\n", 1)[0].removeprefix(b"id: "))
            for chunk in stream
            if chunk.startswith(b"id: ")
        ]
        received.append(ids)

    followers = []
    for n in range(60):
        store.append_event("action.updated", apply_id=applied.id, payload={"n": n})
        if n % 6 == 0:
            thread = threading.Thread(target=follow)
            thread.start()
            followers.append(thread)
        time.sleep(0.01)
    store.append_event("apply.failed", apply_id=applied.id, payload={"error": "test"})
    for thread in followers:
        thread.join(20)
    everything = [e.id for e in store.list_events(0, apply_id=applied.id, limit=500)]
    assert len(received) == 10
    assert all(ids == everything for ids in received)
    assert hub.active == 0
