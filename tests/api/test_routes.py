"""Every route answers, the OpenAPI document lists them all, errors share one JSON shape."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.server.harness import Harness


def _templates(app: Any) -> set[str]:
    """Every URI template of the API routed by the app, found by walking Falcon's router
    (the web console's pages answer HTML and stay out of the OpenAPI document)."""
    found: set[str] = set()
    stack = list(app._router._roots)
    while stack:
        node = stack.pop()
        if node.resource is not None and not type(node.resource).__module__.startswith(
            "metalform.console"
        ):
            found.add(node.uri_template)
        stack.extend(node.children)
    return found


def test_openapi_lists_every_route(harness: Harness) -> None:
    document = harness.get("/openapi.json", role=None).json
    assert document["openapi"].startswith("3.1")
    routed = _templates(harness.app)
    assert len(routed) == 17
    assert routed == set(document["paths"])
    for path, item in document["paths"].items():
        resource = harness.app._router.find(path.replace("{", "x").replace("}", ""))
        assert resource is not None, path
        for method in item:
            assert hasattr(resource[0], f"on_{method}"), (path, method)


def test_probes(harness: Harness) -> None:
    assert harness.get("/healthz", role=None).json == {"status": "ok"}
    not_ready = harness.get("/readyz", role=None)
    assert not_ready.status_code == 503  # not fetched yet
    assert not_ready.json["checks"]["database"]["ok"] is True
    harness.service.tracker.fetch()
    ready = harness.get("/readyz", role=None)
    assert ready.status_code == 200, ready.json
    assert ready.json["checks"]["repository"]["ok"] is True


def test_metrics_count_plans_and_requests(harness: Harness) -> None:
    harness.plan()
    text = harness.get("/metrics", role=None).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("metalform_plans_total", (("result", "succeeded"), ("trigger", "api")))] == 1
    assert any(
        name == "metalform_http_requests_total" and ("route", "/api/v1/plans") in labels
        for name, labels in samples
    )


def test_metrics_registry_is_per_app(harness: Harness) -> None:
    # a second app in the same process must not clash with the first one's metrics
    from metalform.api import create_app

    other = create_app(harness.config, harness.service.engine, harness.store)
    assert other.service.metrics.registry is not harness.service.metrics.registry
    other.service.close()


def test_unknown_route_and_method_are_json_errors(harness: Harness) -> None:
    missing = harness.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "NOT_FOUND"
    assert set(missing.json["error"]) == {"code", "message", "details"}
    wrong = harness.client.simulate_delete("/api/v1/status", headers=harness.headers())
    assert wrong.status_code == 405
    assert wrong.json["error"]["code"] == "METHOD_NOT_ALLOWED"


def test_unknown_ids_are_404(harness: Harness) -> None:
    for path in (
        "/api/v1/plans/0190f0e0-0000-7000-8000-000000000000",
        "/api/v1/plans/not-an-id",
        "/api/v1/applies/0190f0e0-0000-7000-8000-000000000000",
        "/api/v1/applies/0190f0e0-0000-7000-8000-000000000000/events",
        "/api/v1/resources/Server/nope",
    ):
        result = harness.get(path)
        assert result.status_code == 404, path
        assert result.json["error"]["code"] == "NOT_FOUND"
    apply = harness.post("/api/v1/plans/0190f0e0-0000-7000-8000-000000000000/apply")
    assert apply.status_code == 404


def test_bad_plan_requests_are_validation_errors(harness: Harness) -> None:
    for body in ({"revision": 3}, {"revision": "main", "extra": 1}, {"revision": "-x"}, [1]):
        result = harness.post("/api/v1/plans", role="planner", json=body)
        assert result.status_code == 422, (body, result.text)
        assert result.json["error"]["code"] == "VALIDATION_ERROR"
    malformed = harness.post(
        "/api/v1/plans",
        role="planner",
        body=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert harness.get("/api/v1/history").json["items"] == []
