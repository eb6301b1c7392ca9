"""Every role against every route: viewer reads, planner also plans, operator also applies."""

from __future__ import annotations

import pytest

from tests.server.harness import TOKENS, Harness

UNKNOWN = "0190f0e0-0000-7000-8000-000000000000"
# (method, path, lowest role allowed); None: open to anyone
ROUTES = [
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("POST", "/api/v1/plans", "planner"),
    ("GET", f"/api/v1/plans/{UNKNOWN}", "viewer"),
    ("POST", f"/api/v1/plans/{UNKNOWN}/apply", "operator"),
    ("GET", f"/api/v1/applies/{UNKNOWN}", "viewer"),
    ("GET", f"/api/v1/applies/{UNKNOWN}/events", "viewer"),
    ("GET", "/api/v1/status", "viewer"),
    ("GET", "/api/v1/resources", "viewer"),
    ("GET", "/api/v1/resources/Server/a1", "viewer"),
    ("GET", "/api/v1/history", "viewer"),
]
RANK = {None: -1, "viewer": 0, "planner": 1, "operator": 2}
CALLERS = [None, "bogus", "viewer", "planner", "operator"]


def _expected(needed: str | None, caller: str | None) -> str:
    if needed is None:
        return "allowed"
    if caller is None or caller == "bogus":
        return "unauthorized"
    return "allowed" if RANK[caller] >= RANK[needed] else "forbidden"


@pytest.mark.parametrize("caller", CALLERS)
def test_role_table(harness: Harness, caller: str | None) -> None:
    headers = {}
    if caller == "bogus":
        headers = {"Authorization": "Bearer not-a-configured-token"}
    elif caller is not None:
        headers = {"Authorization": f"Bearer {TOKENS[caller]}"}
    seen = {}
    for method, path, _ in ROUTES:
        result = harness.client.simulate_request(
            method, path, headers=headers, json={} if method == "POST" else None
        )
        if result.status_code == 401:
            seen[(method, path)] = "unauthorized"
            assert result.headers["WWW-Authenticate"].startswith("Bearer")
            assert result.json["error"]["code"] == "UNAUTHORIZED"
        elif result.status_code == 403:
            seen[(method, path)] = "forbidden"
            assert result.json["error"]["code"] == "FORBIDDEN"
        else:
            seen[(method, path)] = "allowed"
    assert seen == {(m, p): _expected(n, caller) for m, p, n in ROUTES}
    harness.idle()


def test_webhook_routes_ignore_bearer_tokens(harness: Harness) -> None:
    # a valid API token is no webhook secret
    for path in ("/webhooks/github", "/webhooks/gitlab"):
        result = harness.post(path, role="operator", json={})
        assert result.status_code == 401


def test_malformed_authorization_headers(harness: Harness) -> None:
    for value in (
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        TOKENS["operator"],
        f"Token {TOKENS['operator']}",
    ):
        result = harness.client.simulate_get("/api/v1/status", headers={"Authorization": value})
        assert result.status_code == 401, value


def test_no_tokens_configured_refuses_the_api(harness: Harness) -> None:
    from metalform.api import create_app

    config = harness.config.__class__(**{**harness.config.__dict__, "tokens": ()})
    app = create_app(config, harness.service.engine, harness.store)
    import falcon.testing

    client = falcon.testing.TestClient(app)
    result = client.simulate_get(
        "/api/v1/status", headers={"Authorization": f"Bearer {TOKENS['operator']}"}
    )
    assert result.status_code == 401
    app.service.close()
