"""No console page takes over a second with 10,000 resources: the resource table is paged in
SQL (count + one page), never loaded whole. Prints the times it measured (-s to see them)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from metalform.store import ResourceStatusUpdate
from metalform.store.tables import ResourceLabelRow, ResourceStatusRow
from reconciler.model import Health, SyncStatus
from tests.console.test_pages import cookie_header, sign_in
from tests.server.harness import Harness

pytestmark = pytest.mark.slow
COUNT = 10_000
BUDGET = 1.0


def fill(harness: Harness) -> None:
    """10,000 resources in two bulk inserts (the store's upsert, one by one, takes 20 s)."""
    syncs = [SyncStatus.SYNCED, SyncStatus.OUT_OF_SYNC, SyncStatus.UNKNOWN]
    healths = [Health.HEALTHY, Health.DEGRADED, Health.UNREACHABLE]
    repository = harness.service.repository
    now = datetime.now(UTC)
    harness.store.upsert_resource_status(repository, ResourceStatusUpdate(address="Server/x"))
    rows, labels = [], []
    for i in range(COUNT):
        address = f"Server/node-{i:05d}"
        tags = {"site": f"site-{i % 4}", "rack": f"r{i % 50:02d}"}
        rows.append(
            {
                "repository": repository,
                "address": address,
                "kind": "Server",
                "name": address.removeprefix("Server/"),
                "labels": tags,
                "sync": syncs[i % 3].value,
                "health": healths[i % 3].value,
                "message": "power differs" if i % 7 == 0 else None,
                "updated_at": now,
            }
        )
        labels.extend(
            {"repository": repository, "address": address, "key": k, "value": v}
            for k, v in tags.items()
        )
    with harness.store._write() as session:
        session.execute(insert(ResourceStatusRow), rows)
        session.execute(insert(ResourceLabelRow), labels)


def test_every_page_renders_in_under_a_second_with_10000_resources(harness: Harness) -> None:
    fill(harness)
    cookies = cookie_header(sign_in(harness, "viewer"))
    paths = [
        "/",
        "/resources",
        "/resources?page=150",
        "/resources?label=site%3Dsite-2&sync=OutOfSync",
        "/resources?q=node-099&health=Degraded",
        "/resources?kind=Server&label=rack%3Dr07,site&page=3",
        "/resources/Server/node-09999",
        "/plans",
        "/applies",
        "/history",
        "/deliveries",
    ]
    times = {}
    for path in paths:
        started = time.perf_counter()
        page = harness.client.simulate_get(path, headers=cookies)
        times[path] = time.perf_counter() - started
        assert page.status_code == 200, (path, page.text[:500])
    print("\n".join(f"{seconds * 1000:7.1f} ms  {path}" for path, seconds in times.items()))
    assert max(times.values()) < BUDGET, times
    shown = harness.client.simulate_get("/resources?label=site%3Dsite-2", headers=cookies)
    assert '<b id="match-count">2500</b>' in shown.text
