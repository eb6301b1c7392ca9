"""The audit trail of a rotation: stored, in the history (API and console), and announced as
`credential.rotated`; fingerprints only, never a value."""

from __future__ import annotations

import pytest

from metalform.notify.event import DEFAULT_SEVERITY
from metalform.notify.rotations import rotations
from metalform.notify.templates import HEADLINES
from reconciler.model import Action, ActionStatus, Plan
from reconciler.model.events import NOTIFIABLE, EventType
from reconciler.secrets import Secret, fingerprint
from tests.console.test_pages import cookie_header, sign_in
from tests.fixtures.ordering import CASE
from tests.server.harness import Harness

KEY = "fingerprint-key-for-rotation-tests"
NEW = "s3cret-for-tests"  # the harness's BMC_PASSWORD
OLD = "old-s3cret-for-rotation"


def rotating(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both BMCs still on the previous secret; Git names it as `previous`."""
    monkeypatch.setenv("METALFORM_FINGERPRINT_KEY", KEY)
    monkeypatch.setenv("BMC_PASSWORD_OLD", OLD)
    for address in ("Server/a1", "Server/b2"):
        harness.fleet.systems[address]["state"]["bmc.login"] = "previous"
    text = (CASE / "inventory.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "spec: {username: admin, password: {fromEnv: BMC_PASSWORD}}",
        "spec:\n  username: admin\n  password: {fromEnv: BMC_PASSWORD}\n"
        "  previous: {fromEnv: BMC_PASSWORD_OLD}",
    )
    harness.remote.write("inventory.yaml", text)
    harness.remote.commit("rotate the BMC secret")
    harness.remote.push("main")


def test_an_apply_that_rotates_is_recorded_shown_and_announced(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    rotating(harness, monkeypatch)
    plan = harness.plan()
    assert plan["status"] == "succeeded", plan
    operations = [a["operation"] for a in plan["plan"]["actions"]]
    assert operations.count("account.rotate") == 2
    applied = harness.apply(plan["id"])
    assert applied["status"] == "succeeded", applied

    before = fingerprint(Secret(OLD), KEY.encode())
    after = fingerprint(Secret(NEW), KEY.encode())
    assert before != after
    stored = harness.store.list_rotations(repository=harness.service.repository).items
    assert [(r.credential, r.bmcs, r.apply_id, r.who) for r in stored] == [
        ("bmc", ("Server/a1", "Server/b2"), applied["id"], applied["who"])
    ]
    assert (stored[0].fingerprint_before, stored[0].fingerprint_after) == (before, after)

    events = harness.events("credential.rotated")
    assert len(events) == 1
    assert events[0].payload["addresses"] == ["Server/a1", "Server/b2"]
    assert events[0].payload["fingerprintBefore"] == before
    assert events[0].payload["fingerprintAfter"] == after

    history = harness.get("/api/v1/history").json["items"]
    rotation = next(i for i in history if i["type"] == "rotation")
    assert rotation["credential"] == "bmc"
    assert rotation["applyId"] == applied["id"]
    assert rotation["fingerprintAfter"] == after

    page = harness.client.simulate_get(
        "/history", headers=cookie_header(sign_in(harness, "viewer"))
    )
    assert page.status_code == 200
    assert "Credential/bmc: 2 BMC(s)" in page.text
    assert before in page.text and after in page.text
    for shown in (str(stored), str(events[0].payload), str(history), page.text):
        assert OLD not in shown and NEW not in shown

    # The next plan has nothing to rotate and says `previous` can go.
    again = harness.plan()["plan"]
    assert again["actions"] == []
    assert any("spec.previous can be removed" in d["message"] for d in again["diagnostics"])


def test_only_succeeded_rotations_count() -> None:
    def rotate(action_id: int, address: str) -> Action:
        return Action(
            id=action_id,
            address=address,
            operation="account.rotate",
            params={"credential": "bmc", "username": "admin"},
        )

    plan = Plan(
        revision="r",
        created_at="2026-01-01T00:00:00Z",
        actions=[rotate(1, "Server/a"), rotate(2, "Server/b"), rotate(3, "Server/c")],
        credential_fingerprints={"bmc": "after-fp"},
    )
    statuses = {1: ActionStatus.SUCCEEDED, 2: ActionStatus.FAILED, 3: "succeeded"}
    found = rotations(plan, statuses, base_dir=None, key=b"k")
    assert [(r.credential, r.bmcs, r.fingerprint_after) for r in found] == [
        ("bmc", ["Server/a", "Server/c"], "after-fp")
    ]
    # The Credential's document is not in the plan: the secret before cannot be told.
    assert found[0].fingerprint_before is None
    assert rotations(plan, {2: ActionStatus.FAILED}, base_dir=None, key=b"k") == []


def test_every_notifiable_event_has_a_severity_and_a_headline() -> None:
    # A rule may name any of them: the router needs both to render it.
    assert EventType.CREDENTIAL_ROTATED in NOTIFIABLE
    for event_type in NOTIFIABLE:
        assert event_type in DEFAULT_SEVERITY
        assert event_type in HEADLINES
