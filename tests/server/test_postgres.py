"""The server on PostgreSQL: plan, apply, one apply at a time (the advisory lock)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import Harness, github_push, make_harness


@pytest.fixture
def pg_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_database: str
) -> Iterator[Harness]:
    yield from make_harness(tmp_path, monkeypatch, forge=None, database=postgres_database)


def test_plan_apply_and_lock_on_postgresql(pg_harness: Harness) -> None:
    h = pg_harness
    assert h.store.dialect == "postgresql"
    assert h.github("push", github_push(h.remote.main), delivery="pg-1").status_code == 202
    assert (
        h.github("push", github_push(h.remote.main), delivery="pg-1").json["status"] == "duplicate"
    )
    h.idle()
    plan = h.get("/api/v1/history").json["items"][0]
    assert plan["status"] == "succeeded"
    held = h.store.try_apply_lock(h.service.repository)
    assert held is not None
    try:
        assert h.post(f"/api/v1/plans/{plan['id']}/apply").status_code == 409
    finally:
        held.release()
    applied = h.apply(plan["id"])
    assert applied["status"] == "succeeded"
    stream = h.get(f"/api/v1/applies/{applied['id']}/events").text
    assert stream.rstrip().splitlines()[-2] == "event: apply.succeeded"
    assert h.get("/api/v1/status").json["lastAppliedRevision"] == h.remote.main
