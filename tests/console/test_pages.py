"""The console in-process: sign-in, sessions, CSRF, roles, headers and every page."""

from __future__ import annotations

import hashlib
import re
import time

import falcon.testing
import pytest

from metalform.api import create_app
from metalform.console.security import HEADERS
from metalform.console.sessions import CACHE_SECONDS
from providers.memory import memory_factory
from reconciler.engine import Engine
from tests.console.browser import unavailable
from tests.server.harness import TOKENS, Harness, github_push


def sign_in(harness: Harness, role: str) -> falcon.testing.Result:
    """Sign in through the form as a browser does; the client keeps the cookies."""
    client = harness.client
    page = client.simulate_get("/")
    assert page.status_code == 200
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce is not None, page.text
    result = client.simulate_post(
        "/login",
        body=f"token={TOKENS[role]}&nonce={nonce.group(1)}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"metalform_login={page.cookies['metalform_login'].value}",
        },
    )
    return result


def cookie_header(result: falcon.testing.Result) -> dict[str, str]:
    return {"Cookie": f"metalform_session={result.cookies['metalform_session'].value}"}


def csrf_of(text: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', text)
    assert found is not None
    return found.group(1)


def test_without_a_session_the_root_is_a_sign_in_form_and_pages_redirect(
    harness: Harness,
) -> None:
    root = harness.client.simulate_get("/")
    assert root.status_code == 200
    assert 'type="password"' in root.text and 'name="token"' in root.text
    assert 'action="/login"' in root.text
    for name, value in HEADERS.items():
        assert root.headers[name] == value
    assert "script-src 'self'" in root.headers["Content-Security-Policy"]
    assert "<script>" not in root.text  # no inline script anywhere
    resources = harness.client.simulate_get("/resources")
    assert resources.status_code == 303
    assert resources.headers["Location"].endswith("/")


def test_sign_in_sets_an_httponly_strict_cookie_that_does_not_hold_the_token(
    harness: Harness,
) -> None:
    result = sign_in(harness, "viewer")
    assert result.status_code == 303
    cookie = result.cookies["metalform_session"]
    assert cookie.http_only
    assert cookie.same_site == "Strict"
    assert TOKENS["viewer"] not in cookie.value
    overview = harness.client.simulate_get("/", headers=cookie_header(result))
    assert overview.status_code == 200
    assert "Overview" in overview.text
    assert TOKENS["viewer"] not in overview.text
    # the API's GET routes take the session; its POST routes do not
    status = harness.client.simulate_get("/api/v1/status", headers=cookie_header(result))
    assert status.status_code == 200
    post = harness.client.simulate_post("/api/v1/plans", headers=cookie_header(result), json={})
    assert post.status_code == 401


def test_a_wrong_token_or_a_missing_nonce_does_not_sign_in(harness: Harness) -> None:
    page = harness.client.simulate_get("/")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce is not None
    wrong = harness.client.simulate_post(
        "/login",
        body=f"token=nope&nonce={nonce.group(1)}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"metalform_login={page.cookies['metalform_login'].value}",
        },
    )
    assert wrong.status_code == 401
    assert "metalform_session" not in wrong.cookies
    forged = harness.client.simulate_post(
        "/login",
        body=f"token={TOKENS['operator']}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert forged.status_code == 401
    assert "metalform_session" not in forged.cookies


def _try_token(harness: Harness, token: str) -> falcon.testing.Result:
    page = harness.client.simulate_get("/")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce is not None
    return harness.client.simulate_post(
        "/login",
        body=f"token={token}&nonce={nonce.group(1)}",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"metalform_login={page.cookies['metalform_login'].value}",
        },
    )


def test_a_guessing_loop_is_refused_for_a_minute_even_with_the_right_token(
    harness: Harness,
) -> None:
    sessions = harness.app.sessions
    now = [1000.0]
    sessions.clock = lambda: now[0]
    for n in range(sessions.max_failures):
        assert _try_token(harness, f"guess-{n}").status_code == 401
    refused = _try_token(harness, TOKENS["viewer"])
    assert refused.status_code == 429
    assert "metalform_session" not in refused.cookies
    assert refused.headers["Retry-After"] == "60"
    assert "Too many failed sign-ins" in refused.text
    now[0] += 61  # the window has passed: the right token signs in again
    assert _try_token(harness, TOKENS["viewer"]).status_code == 303


def test_a_sign_in_holds_on_every_replica_and_a_sign_out_ends_it_everywhere(
    harness: Harness,
) -> None:
    """Two replicas on one store, as behind a load balancer without sticky sessions."""
    engine = Engine(factories={"redfish": memory_factory(harness.fleet)})
    other = create_app(harness.config, engine, harness.store)
    try:
        second = falcon.testing.TestClient(other)
        signed = sign_in(harness, "operator")
        cookies = cookie_header(signed)
        page = second.simulate_get("/", headers=cookies)
        assert page.status_code == 200 and "Overview" in page.text
        assert harness.store.load_session(_digest(signed)) is not None  # the digest, not the id
        assert signed.cookies["metalform_session"].value not in str(
            harness.store.load_session(_digest(signed))
        )
        # Signed out on the second replica; the first reads it again after its short cache.
        out = second.simulate_post("/logout", headers=cookies, body=f"csrf={csrf_of(page.text)}")
        assert out.status_code == 303
        assert second.simulate_get("/", headers=cookies).text.count('name="token"') == 1
        now = [time.monotonic() + CACHE_SECONDS + 1]
        harness.app.sessions.clock = lambda: now[0]
        back = harness.client.simulate_get("/", headers=cookies)
        assert 'name="token"' in back.text  # the sign-in form again
    finally:
        other.stopping.set()
        other.hub.close()
        other.service.close(10)


def _digest(result: falcon.testing.Result) -> str:
    return hashlib.sha256(result.cookies["metalform_session"].value.encode()).hexdigest()


def test_every_page_renders_for_a_viewer_who_gets_no_apply_button(harness: Harness) -> None:
    plan = harness.plan()
    assert plan["status"] == "succeeded"
    applied = harness.apply(plan["id"])
    second = harness.plan()
    cookies = cookie_header(sign_in(harness, "viewer"))
    addresses = [r["address"] for r in harness.get("/api/v1/resources").json["items"]]
    assert addresses
    paths = [
        "/",
        "/resources",
        "/resources?kind=Server&q=a1",
        f"/resources/{addresses[0]}",
        "/plans",
        f"/plans/{plan['id']}",
        "/applies",
        f"/applies/{applied['id']}",
        "/history",
        "/deliveries",
    ]
    for path in paths:
        page = harness.client.simulate_get(path, headers=cookies)
        assert page.status_code == 200, (path, page.text)
        assert page.headers["X-Frame-Options"] == "DENY"
    plan_page = harness.client.simulate_get(f"/plans/{plan['id']}", headers=cookies)
    assert 'id="apply"' not in plan_page.text
    confirm = harness.client.simulate_get(f"/plans/{second['id']}/apply", headers=cookies)
    assert confirm.status_code == 403
    refused = harness.client.simulate_post(
        f"/plans/{second['id']}/apply",
        headers={**cookies, "Content-Type": "application/x-www-form-urlencoded"},
        body=f"csrf={csrf_of(plan_page.text)}",
    )
    assert refused.status_code == 403
    assert harness.store.list_applies(plan_id=second["id"]).items == []


def test_an_operator_applies_through_the_confirmation_page_with_the_csrf_token(
    harness: Harness,
) -> None:
    plan = harness.plan()
    cookies = cookie_header(sign_in(harness, "operator"))
    page = harness.client.simulate_get(f"/plans/{plan['id']}", headers=cookies)
    assert f'href="/plans/{plan["id"]}/apply"' in page.text
    confirm = harness.client.simulate_get(f"/plans/{plan['id']}/apply", headers=cookies)
    assert confirm.status_code == 200
    assert 'id="disruptive"' in confirm.text
    form = {**cookies, "Content-Type": "application/x-www-form-urlencoded"}
    forged = harness.client.simulate_post(f"/plans/{plan['id']}/apply", headers=form, body="")
    assert forged.status_code == 403
    assert "CSRF" in forged.text
    assert harness.store.list_applies(plan_id=plan["id"]).items == []
    done = harness.client.simulate_post(
        f"/plans/{plan['id']}/apply", headers=form, body=f"csrf={csrf_of(confirm.text)}"
    )
    assert done.status_code == 303
    harness.idle()
    [applied] = harness.store.list_applies(plan_id=plan["id"]).items
    assert done.headers["Location"] == f"/applies/{applied.id}"
    assert applied.who == "operator"


def test_sign_out_ends_the_session(harness: Harness) -> None:
    cookies = cookie_header(sign_in(harness, "viewer"))
    page = harness.client.simulate_get("/", headers=cookies)
    out = harness.client.simulate_post(
        "/logout",
        headers={**cookies, "Content-Type": "application/x-www-form-urlencoded"},
        body=f"csrf={csrf_of(page.text)}",
    )
    assert out.status_code == 303
    after = harness.client.simulate_get("/resources", headers=cookies)
    assert after.status_code == 303
    api = harness.client.simulate_get("/api/v1/status", headers=cookies)
    assert api.status_code == 401


def test_without_chromium_the_browser_tests_fail_in_ci_and_skip_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI"):
        unavailable("chromium did not start")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        unavailable("chromium did not start")


def test_the_webhooks_page_shows_what_arrived_verified_or_not_and_what_it_started(
    harness: Harness,
) -> None:
    sha = harness.remote.commit("new commit")
    harness.remote.push("main")
    assert harness.github("push", github_push(sha), delivery="d-verified").status_code == 202
    forged = harness.github("push", github_push(sha), delivery="d-forged", secret="wrong")
    assert forged.status_code == 401
    harness.idle()
    cookies = cookie_header(sign_in(harness, "viewer"))
    page = harness.client.simulate_get("/deliveries", headers=cookies)
    assert page.status_code == 200
    verified = page.text[page.text.index('id="deliveries"') : page.text.index('id="rejected"')]
    assert "d-verified" in verified and "planned" in verified
    assert "d-forged" not in verified
    rejected = page.text[page.text.index('id="rejected"') :]
    assert "github" in rejected
    assert "wrong" not in page.text
