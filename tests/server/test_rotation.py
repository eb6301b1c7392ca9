"""A secret rotated since the last apply shows in the next plan as a changed fingerprint."""

from __future__ import annotations

import json

import pytest

from reconciler.credentials import with_rotations
from reconciler.model import ChangeKind, Plan
from tests.server.harness import Harness


def test_rotated_secret_shows_as_a_changed_fingerprint(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = harness.plan()
    assert first["status"] == "succeeded"
    applied = harness.apply(first["id"])
    assert applied["status"] == "succeeded", applied

    monkeypatch.setenv("BMC_PASSWORD", "rotated-s3cret-for-tests")
    second = harness.plan()
    text = harness.get(f"/api/v1/plans/{second['id']}", params={"format": "text"}).text
    assert "~ Credential/bmc" in text
    assert "secret (fingerprint)  hmac-sha256:" in text
    assert "rotated-s3cret-for-tests" not in text and "s3cret-for-tests" not in text
    markdown = harness.get(f"/api/v1/plans/{second['id']}", params={"format": "markdown"}).text
    assert "Credential/bmc" in markdown

    third = harness.plan()  # nothing applied since: the same rotation is still shown
    text = harness.get(f"/api/v1/plans/{third['id']}", params={"format": "text"}).text
    assert "~ Credential/bmc" in text


def test_with_rotations_is_pure_and_only_adds_changed_fingerprints() -> None:
    plan = Plan(
        revision="r",
        created_at="2026-01-01T00:00:00+00:00",
        credential_fingerprints={"a": "hmac-sha256:1", "b": "hmac-sha256:2"},
    )
    same = with_rotations(plan, {"a": "hmac-sha256:1", "c": "hmac-sha256:3"})
    assert same is plan
    rotated = with_rotations(plan, {"a": "hmac-sha256:0", "b": "hmac-sha256:2"})
    assert [c.address for c in rotated.changes] == ["Credential/a"]
    change = rotated.changes[0]
    assert change.action is ChangeKind.UPDATE
    assert (change.diff[0].before, change.diff[0].after) == ("hmac-sha256:0", "hmac-sha256:1")
    assert rotated.summary.update == 1 and plan.summary.update == 0
    assert json.loads(rotated.to_json())["changes"][0]["address"] == "Credential/a"
