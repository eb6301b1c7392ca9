"""`plan --notify`, `apply --notify` and notification problems in `validate`, in memory."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from metalform import cli
from metalform.notify.throttle_state import FileThrottleState, StoreThrottleState, default_path
from metalform.store import Store
from metalform.store.tables import ThrottleWindowRow
from providers.memory import MemoryFleet, memory_factory
from reconciler import engine
from tests.fixtures.notify import HttpReceiver
from tests.fixtures.ordering import CASE, fleet

ALL_EVENTS = "[plan.created, plan.failed, apply.started, apply.succeeded, apply.failed]"

NOTIFY = """\
apiVersion: metalform/v1
kind: NotificationChannel
metadata: {{name: hook}}
spec: {{type: webhook, url: "{url}"}}
---
apiVersion: metalform/v1
kind: NotificationRule
metadata: {{name: everything}}
spec:
  events: {events}
  channels: [hook]
{extra}"""


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> MemoryFleet:
    f = fleet()
    factory = memory_factory(f)
    monkeypatch.setattr(
        engine, "installed_providers", lambda: {"redfish": factory, "ipmi": factory}
    )
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    monkeypatch.setenv("NO_COLOR", "1")
    return f


def make_repo(
    tmp_path: Path, receiver: HttpReceiver, events: str = ALL_EVENTS, extra: str = ""
) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(CASE, repo)
    (repo / "notify.yaml").write_text(
        NOTIFY.format(url=receiver.url("/hook"), events=events, extra=extra), encoding="utf-8"
    )
    return repo


def received(receiver: HttpReceiver) -> list[dict[str, Any]]:
    return [post.json() for post in receiver.to("/hook")]


def types(receiver: HttpReceiver) -> list[str]:
    return [body["event"]["type"] if "event" in body else "digest" for body in received(receiver)]


def test_plan_notifies_only_with_the_flag(
    tmp_path: Path, memory: MemoryFleet, http_receiver: HttpReceiver
) -> None:
    repo = make_repo(tmp_path, http_receiver)
    assert cli.main(["plan", "-C", str(repo)]) == 0
    assert received(http_receiver) == []
    assert cli.main(["plan", "-C", str(repo), "--notify", "--format", "json"]) == 0
    (body,) = received(http_receiver)
    event = body["event"]
    assert event["type"] == "plan.created"
    assert event["addresses"] == ["Server/a1", "Server/b2"]
    assert event["summary"]["update"] == 2
    assert event["revision"].startswith("worktree:")
    assert event["diagnostics"] == []
    assert memory.calls == []


def test_a_plan_without_changes_is_not_news(
    tmp_path: Path, memory: MemoryFleet, http_receiver: HttpReceiver
) -> None:
    repo = make_repo(tmp_path, http_receiver)
    assert cli.main(["apply", "--auto-approve", "-C", str(repo)]) == 0
    assert cli.main(["plan", "-C", str(repo), "--notify"]) == 0
    assert received(http_receiver) == []


def test_apply_auto_approve_notifies_each_step(
    tmp_path: Path, memory: MemoryFleet, http_receiver: HttpReceiver
) -> None:
    repo = make_repo(tmp_path, http_receiver)
    assert cli.main(["apply", "--auto-approve", "-C", str(repo), "--notify"]) == 0
    assert types(http_receiver) == ["plan.created", "apply.started", "apply.succeeded"]
    started, done = received(http_receiver)[1:]
    assert {r["status"] for r in started["event"]["results"]} == {"planned"}
    assert done["event"]["summary"] == {"succeeded": 4}
    assert [(r["address"], r["operation"], r["status"]) for r in done["event"]["results"]] == [
        ("Server/a1", "bios.set", "succeeded"),
        ("Server/b2", "bios.set", "succeeded"),
        ("Server/a1", "power.on", "succeeded"),
        ("Server/b2", "power.reset", "succeeded"),
    ]
    assert "apply.succeeded" in done["subject"] or "succeeded" in done["text"]


def test_saved_plan_apply_failure_is_notified(
    tmp_path: Path, memory: MemoryFleet, http_receiver: HttpReceiver
) -> None:
    repo = make_repo(tmp_path, http_receiver, "[apply.failed]")
    planfile = tmp_path / "plan.json"
    assert cli.main(["plan", "-C", str(repo), "-o", str(planfile), "--notify"]) == 0
    memory.fail_operations[("Server/b2", "bios.set")] = "HTTP 500 from the BMC"
    assert cli.main(["apply", str(planfile), "--notify"]) == 1
    (body,) = received(http_receiver)
    event = body["event"]
    assert event["type"] == "apply.failed"
    assert event["severity"] == "error"
    failed = [r for r in event["results"] if r["status"] == "failed"]
    assert failed == [
        {
            "address": "Server/b2",
            "operation": "bios.set",
            "status": "failed",
            "error": "Server/b2: HTTP 500 from the BMC",
        }
    ]
    assert event["summary"] == {"succeeded": 2, "failed": 1, "skipped": 1}


def test_stale_plan_apply_is_notified_as_failed(
    tmp_path: Path, memory: MemoryFleet, http_receiver: HttpReceiver
) -> None:
    repo = make_repo(tmp_path, http_receiver, "[apply.failed]")
    planfile = tmp_path / "plan.json"
    assert cli.main(["plan", "-C", str(repo), "-o", str(planfile)]) == 0
    memory.systems["Server/a1"]["state"]["power"] = "On"  # the live state moved
    assert cli.main(["apply", str(planfile), "--notify"]) == 1
    (body,) = received(http_receiver)
    assert body["event"]["type"] == "apply.failed"
    assert "plan is stale" in body["event"]["message"]


def test_planning_failure_is_notified(
    tmp_path: Path,
    memory: MemoryFleet,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path, http_receiver)
    monkeypatch.setattr(engine, "installed_providers", dict)
    assert cli.main(["plan", "-C", str(repo), "--notify"]) == 1
    assert "no provider is installed" in capsys.readouterr().err
    (body,) = received(http_receiver)
    assert body["event"]["type"] == "plan.failed"
    assert "no provider is installed for driver 'redfish'" in body["event"]["message"]


@pytest.mark.parametrize("where", ["state file", "state store"])
def test_a_throttle_holds_across_runs_and_the_next_run_after_the_window_sends_the_digest(
    tmp_path: Path,
    memory: MemoryFleet,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    now = [1_000_000.0]
    for kept in (FileThrottleState, StoreThrottleState):
        monkeypatch.setattr(kept, "clock", staticmethod(lambda: now[0]))
    database = f"sqlite:///{tmp_path / 'state.db'}"
    if where == "state store":
        monkeypatch.setenv("METALFORM_DATABASE", database)
    repo = make_repo(tmp_path, http_receiver, extra="  throttle: {window: 1h, max: 1}\n")
    assert cli.main(["apply", "--auto-approve", "-C", str(repo), "--notify"]) == 0
    state_file = default_path()
    if where == "state store":
        assert not state_file.exists()
        with Store.open(database) as store, store._read() as session:
            assert session.scalars(select(ThrottleWindowRow.rule)).all() == ["everything"]
    else:
        assert "everything" in state_file.read_text(encoding="utf-8")
    # the window is open when the run ends: its digest waits for it to end
    assert types(http_receiver) == ["plan.created"]
    memory.systems["Server/a1"]["state"]["power"] = "Off"  # drift: the next plan is news
    now[0] += 600
    assert cli.main(["plan", "-C", str(repo), "--notify"]) == 0
    assert types(http_receiver) == ["plan.created"]  # another process, the same window
    now[0] += 3600
    assert cli.main(["plan", "-C", str(repo), "--notify"]) == 0
    assert types(http_receiver) == ["plan.created", "digest", "plan.created"]
    digest = received(http_receiver)[1]["digest"]
    assert digest["suppressed"] == 3
    assert [e["type"] for e in digest["events"]] == [
        "apply.started",
        "apply.succeeded",
        "plan.created",
    ]


def test_delivery_failures_are_only_logged(
    tmp_path: Path,
    memory: MemoryFleet,
    http_receiver: HttpReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path, http_receiver)
    http_receiver.fail("/hook", 404)
    assert cli.main(["apply", "--auto-approve", "-C", str(repo), "--notify"]) == 0
    assert memory.systems["Server/a1"]["state"]["power"] == "On"
    assert len(http_receiver.to("/hook")) == 3
    err = capsys.readouterr().err
    assert (
        err.count(
            "WARNING metalform.notify: notification of rule everything to channel hook failed"
        )
        == 3
    )
    assert "HTTP 404" in err
    assert "Traceback" not in err


def test_broken_notification_config_does_not_stop_a_plan(
    tmp_path: Path,
    memory: MemoryFleet,
    http_receiver: HttpReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(
        tmp_path, http_receiver, extra='  template: "{{ event.type }} {{ secrets }}"\n'
    )
    assert cli.main(["plan", "-C", str(repo), "--notify"]) == 0
    assert received(http_receiver) == []
    assert "notifications are off for this run" in capsys.readouterr().err


def test_validate_reports_notification_problems(
    tmp_path: Path,
    memory: MemoryFleet,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(
        tmp_path, http_receiver, extra='  template: "{{ event.type }} {{ secrets }}"\n'
    )
    assert cli.main(["validate", "-C", str(repo)]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("notify.yaml:")
    assert "NotificationRule/everything" in lines[0]
    assert "unknown variable(s) secrets" in lines[0]
    assert lines[1] == "error: 1 error in the desired state; nothing was changed."
    assert received(http_receiver) == []


def test_validate_does_not_resolve_notification_secrets(
    tmp_path: Path,
    memory: MemoryFleet,
    http_receiver: HttpReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = make_repo(tmp_path, http_receiver)
    text = (repo / "notify.yaml").read_text(encoding="utf-8")
    text = text.replace(f'url: "{http_receiver.url("/hook")}"', "url: {fromEnv: UNSET_HOOK_URL}")
    (repo / "notify.yaml").write_text(text, encoding="utf-8")
    monkeypatch.delenv("UNSET_HOOK_URL", raising=False)
    assert cli.main(["validate", "-C", str(repo)]) == 0
    assert "Valid:" in capsys.readouterr().out
