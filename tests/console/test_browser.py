"""The console in a real headless Chromium, against a real `metalform serve` process whose
engine talks to a real Redfish BMC (sushy-emulator) on loopback.

One server for the module: sign in, compare the overview with the API, filter by label, open
the plan, apply it as an operator and watch it succeed without a reload; then a viewer, who
gets no Apply button and whose forged POST without the CSRF token is refused; sign out.
Every page is saved as a screenshot under test-artifacts/console/.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from metalform.lab.redfish import LabSystem, RedfishPeer
from tests.console.browser import browser, screenshot
from tests.fixtures.redfish import LAB_PASSWORD, LAB_USERNAME, start_peer
from tests.server.harness import TOKENS, GitRemote
from tests.server.serving import ServeProcess, write_config

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("console-browser")]
__all__ = ["browser"]  # the fixture, used by name

SYSTEMS = [
    # (identity, site, rack, live power, desired power)
    ("web-1", "ams1", "r1", "Off", "On"),
    ("web-2", "ams1", "r1", "On", "Off"),
    ("web-3", "ams1", "r2", "On", "On"),
    ("db-1", "fra1", "r7", "Off", "On"),
]


def desired_state(peer: RedfishPeer) -> dict[str, str]:
    servers = "\n".join(
        f"""---
apiVersion: metalform/v1
kind: Server
metadata: {{name: {name}, labels: {{site: {site}, rack: {rack}}}}}
spec:
  bmc: {{driver: redfish, address: "{peer.url}", systemId: {name}, credential: bmc}}
  power: {desired}
  reboot: Allowed
"""
        for name, site, rack, _, desired in SYSTEMS
    )
    credential = f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: {LAB_USERNAME}, password: {{fromEnv: BMC_PASSWORD}}}}
"""
    return {"credentials.yaml": credential, "servers.yaml": servers}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    root = tmp_path_factory.mktemp("console")
    peer = start_peer(
        root / "bmc",
        [LabSystem(name, power_state=live) for name, _, _, live, _ in SYSTEMS],
        power_delay=1.0,  # long enough to see the apply running, short enough for CI
    )
    try:
        (root / "git").mkdir()
        remote = GitRemote(root / "git")
        remote.git("rm", "-q", "-r", "infra")
        for name, text in desired_state(peer).items():
            remote.write(name, text)
        remote.commit("four servers behind one Redfish BMC")
        remote.push("main")
        config = write_config(root / "server.yaml", remote.url)
        argv = [sys.executable, "-m", "metalform.cli", "serve", "--config", str(config)]
        with ServeProcess(argv, root, {"BMC_PASSWORD": LAB_PASSWORD}) as process:
            plan = process.plan()
            assert plan["status"] == "succeeded", process.log()
            process.remote = remote  # type: ignore[attr-defined]
            yield process
            assert "Traceback" not in process.log()
    finally:
        peer.stop()


def sign_in(browser: Any, server: ServeProcess, role: str) -> Any:
    context = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto("/")
    assert page.locator("input[name=token][type=password]").count() == 1
    page.fill("input[name=token]", TOKENS[role])
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")
    cookies = {c["name"]: c for c in context.cookies()}
    session = cookies["metalform_session"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert TOKENS[role] not in session["value"]
    assert TOKENS[role] not in page.content()
    return page


def test_an_operator_signs_in_filters_and_applies_a_plan_watching_it_live(
    browser: Any, server: ServeProcess
) -> None:
    login = browser.new_page(base_url=server.base)
    login.goto("/")
    screenshot(login, "01-sign-in")
    login.close()

    page = sign_in(browser, server, "operator")
    status = server.get("/api/v1/status").json()
    counts = status["resources"]
    assert page.inner_text("#total") == str(counts["total"])
    for value, count in counts["bySync"].items():
        assert page.inner_text(f"[data-sync='{value}']") == str(count)
    for value, count in counts["byHealth"].items():
        assert page.inner_text(f"[data-health='{value}']") == str(count)
    assert page.inner_text("#drift") == str(status["drift"]["resources"])
    screenshot(page, "02-overview")

    page.click("nav >> text=Resources")
    page.fill("#label", "site=ams1")
    page.click("#filter")
    page.wait_for_url("**/resources?*")
    wanted = server.get("/api/v1/resources", params={"label": "site=ams1"}).json()
    assert int(page.inner_text("#match-count")) == wanted["count"] == 3
    shown = page.locator("#resources tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.address)"
    )
    assert shown == sorted(r["address"] for r in wanted["items"])
    screenshot(page, "03-resources-filtered")
    page.click("text=Server/web-2")
    page.wait_for_selector("#fields")
    screenshot(page, "04-resource")

    [latest] = server.get("/api/v1/plans", params={"limit": 1}).json()["items"]
    page.click("nav >> text=Plans")
    screenshot(page, "05-plans")
    page.click(f"tr[data-plan='{latest['id']}'] a")
    page.wait_for_selector("#summary")
    assert "disruptive" in page.inner_text("main")
    screenshot(page, "06-plan")

    page.click("#apply")
    page.wait_for_selector("#confirm")
    assert "Server/web-2" in page.inner_text("#disruptive")
    screenshot(page, "07-confirm")
    page.click("#confirm")
    page.wait_for_url("**/applies/*")
    page.evaluate("window.__notReloaded = true")
    page.wait_for_selector("#apply-status[data-status='succeeded']", timeout=60_000)
    assert page.evaluate("window.__notReloaded") is True  # updated live, not reloaded
    statuses = page.locator("#actions td.status").all_inner_texts()
    assert statuses and all(s == "succeeded" for s in statuses)
    assert page.inner_text("#done") == str(len(statuses))
    screenshot(page, "08-apply")

    page.click("nav >> text=Applies")
    screenshot(page, "09-applies")
    page.click("nav >> text=History")
    screenshot(page, "10-history")
    page.click("nav >> text=Webhooks")
    screenshot(page, "11-webhooks")
    page.set_viewport_size({"width": 390, "height": 844})
    page.click("nav >> text=Overview")
    screenshot(page, "12-overview-phone")
    page.context.close()


def test_a_viewer_sees_no_apply_button_a_forged_post_is_refused_and_sign_out_works(
    browser: Any, server: ServeProcess
) -> None:
    remote: GitRemote = server.remote  # type: ignore[attr-defined]
    remote.write("servers.yaml", remote_servers(remote).replace("power: On", "power: Off", 1))
    remote.commit("web-1 off")
    remote.push("main")
    plan = server.plan()
    assert plan["status"] == "succeeded" and plan["actionCount"] > 0, plan

    operator = sign_in(browser, server, "operator")
    operator.goto(f"/plans/{plan['id']}")
    assert operator.locator("#apply").count() == 1  # what the viewer must not get
    no_csrf = operator.request.post(
        f"/plans/{plan['id']}/apply", form={"confirm": "yes"}, max_redirects=0
    )
    assert no_csrf.status == 403
    assert "CSRF" in no_csrf.text()
    operator.context.close()

    page = sign_in(browser, server, "viewer")
    page.goto(f"/plans/{plan['id']}")
    page.wait_for_selector("#summary")
    assert page.locator("#apply").count() == 0
    screenshot(page, "13-plan-as-viewer")
    forged = page.request.post(
        f"/plans/{plan['id']}/apply", form={"confirm": "yes"}, max_redirects=0
    )
    assert forged.status == 403
    applies = server.get("/api/v1/applies", params={"planId": plan["id"]}).json()
    assert applies["items"] == []
    page.click("#sign-out")
    page.wait_for_selector("input[name=token]")
    assert page.context.request.get("/api/v1/status").status == 401
    assert page.context.request.get("/resources", max_redirects=0).status == 303
    page.context.close()


def remote_servers(remote: GitRemote) -> str:
    return (remote.work / "infra" / "servers.yaml").read_text(encoding="utf-8")
