"""`GET /api/v1/plans` and `GET /api/v1/applies`: newest first, filtered, paginated like
history (`limit`, `before`, `nextBefore`); an interrupted plan renders as text."""

from __future__ import annotations

from metalform.store import recovery
from tests.server.harness import Harness


def test_plans_list_newest_first_with_pages_and_a_status_filter(harness: Harness) -> None:
    ids = [harness.plan()["id"] for _ in range(3)]
    first = harness.get("/api/v1/plans", params={"limit": 2}).json
    assert [p["id"] for p in first["items"]] == ids[::-1][:2]
    assert first["nextBefore"] == ids[1]
    rest = harness.get("/api/v1/plans", params={"limit": 2, "before": first["nextBefore"]}).json
    assert [p["id"] for p in rest["items"]] == [ids[0]]
    assert rest["nextBefore"] is None
    failed = harness.get("/api/v1/plans", params={"status": "failed"}).json
    assert failed["items"] == []
    bad = harness.get("/api/v1/plans", params={"status": "nope"})
    assert bad.status_code == 422  # InvalidRequest, as the other query checks
    assert bad.json["error"]["details"]["field"] == "status"


def test_applies_list_filters_by_plan_and_status(harness: Harness) -> None:
    plan = harness.plan()
    applied = harness.apply(plan["id"])
    other = harness.plan()
    listed = harness.get("/api/v1/applies").json
    assert [a["id"] for a in listed["items"]] == [applied["id"]]
    assert listed["items"][0]["counts"]
    by_plan = harness.get("/api/v1/applies", params={"planId": other["id"]}).json
    assert by_plan["items"] == []
    by_status = harness.get("/api/v1/applies", params={"status": applied["status"]}).json
    assert [a["id"] for a in by_status["items"]] == [applied["id"]]
    assert harness.get("/api/v1/applies", role=None).status_code == 401


def test_an_interrupted_plan_renders_as_text_like_a_failed_one(harness: Harness) -> None:
    record = harness.store.create_plan(harness.service.repository, ref="main")
    recovery.interrupt_plan(harness.store, record.id, "interrupted: the server stopped")
    for fmt in ("text", "markdown"):
        result = harness.get(f"/api/v1/plans/{record.id}", params={"format": fmt})
        assert result.status_code == 200, result.text
        assert result.text == f"Plan {record.id} interrupted:\ninterrupted: the server stopped\n"
