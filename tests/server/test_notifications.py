"""The server notifies through the tracked revision's rules: drift, applies, throttling."""

from __future__ import annotations

from typing import Any

from tests.fixtures.notify import HttpReceiver
from tests.server.harness import Harness, wait_for

RULES = """\
apiVersion: metalform/v1
kind: NotificationChannel
metadata: {{name: hook}}
spec: {{type: webhook, url: "{url}"}}
---
apiVersion: metalform/v1
kind: NotificationRule
metadata: {{name: servers}}
spec:
  events: [drift.detected, apply.succeeded]
  match: {{kinds: [Server]}}
  channels: [hook]
  template: "{{{{ event.type }}}}: {{{{ event.addresses | join(',') }}}}"
{extra}"""

THROTTLED = """\
  throttle: {window: 1h, max: 2}
"""


def _track_rules(harness: Harness, receiver: HttpReceiver, extra: str = "") -> None:
    harness.remote.write("notify.yaml", RULES.format(url=receiver.url("/hook"), extra=extra))
    harness.remote.commit("notifications")
    harness.remote.push("main")


def _bodies(receiver: HttpReceiver) -> list[dict[str, Any]]:
    return [post.json() for post in receiver.to("/hook")]


def test_drift_and_apply_are_notified(harness: Harness, http_receiver: HttpReceiver) -> None:
    _track_rules(harness, http_receiver)
    record = harness.service.check_drift()
    harness.idle()
    drift = wait_for(lambda: _bodies(http_receiver), what="the drift notification")[0]
    assert drift["rule"] == "servers"
    assert drift["text"] == "drift.detected: Server/a1,Server/b2"
    assert drift["event"]["type"] == "drift.detected"
    assert drift["event"]["plan_id"] == record.id
    assert drift["event"]["summary"]["update"] == 2

    applied = harness.apply(record.id)
    assert applied["status"] == "succeeded"
    bodies = wait_for(
        lambda: len(_bodies(http_receiver)) >= 2 and _bodies(http_receiver),
        what="the apply notification",
    )
    done = bodies[1]
    assert done["event"]["type"] == "apply.succeeded"
    assert done["event"]["apply_id"] == applied["id"]
    assert sorted(done["event"]["addresses"]) == ["Server/a1", "Server/b2"]
    results = done["event"]["results"]
    assert {(r["address"], r["operation"], r["status"]) for r in results} == {
        ("Server/b2", "bios.set", "succeeded"),
        ("Server/a1", "bios.set", "succeeded"),
        ("Server/a1", "power.on", "succeeded"),
        ("Server/b2", "power.reset", "succeeded"),
    }
    assert done["event"]["summary"] == {"succeeded": 4}
    # plan.created and apply.started went by too, but the rule does not name them
    assert len(_bodies(http_receiver)) == 2


def test_a_burst_is_throttled_into_a_digest(harness: Harness, http_receiver: HttpReceiver) -> None:
    _track_rules(harness, http_receiver, THROTTLED)
    for _ in range(5):
        harness.service.check_drift()
        harness.idle()
    wait_for(lambda: len(_bodies(http_receiver)) >= 2, what="the first two notifications")
    # shutting down delivers what is queued and sends the held events as one digest
    harness.service.notifications.close()
    bodies = _bodies(http_receiver)
    assert [b["text"] for b in bodies[:2]] == ["drift.detected: Server/a1,Server/b2"] * 2
    assert len(bodies) == 3
    assert bodies[2]["digest"]["suppressed"] == 3
    assert len(bodies[2]["digest"]["events"]) == 3


def test_rules_follow_the_tracked_branch(harness: Harness, http_receiver: HttpReceiver) -> None:
    harness.service.check_drift()
    harness.idle()
    assert harness.service.notifications.current is None  # no rules at the first revision
    _track_rules(harness, http_receiver)
    harness.service.check_drift()
    harness.idle()
    wait_for(lambda: _bodies(http_receiver), what="a notification after the rules were pushed")
    assert harness.service.notifications.revision == harness.remote.git("rev-parse", "HEAD")
    # dropping the rules from Git stops the notifications
    harness.remote.git("rm", "-q", "infra/notify.yaml")
    harness.remote.commit("no more notifications")
    harness.remote.push("main")
    harness.service.check_drift()
    harness.idle()
    assert harness.service.notifications.current is None
    assert len(_bodies(http_receiver)) == 1
