"""Plans and applies over two sites match the single-process ones (real redis, real workers)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from metalform.sites.app import EXECUTE_TASK
from metalform.sites.config import from_values
from metalform.sites.dispatch import SiteRouter
from metalform.sites.signing import sign
from reconciler.apply import ActionResult
from reconciler.engine import Engine
from reconciler.model import Action, ActionStatus, Severity
from tests.fixtures.redfish import LAB_PASSWORD
from tests.sites.conftest import (
    NOW,
    SECRET_ENV,
    SETTINGS,
    SITES,
    Sites,
    baseline,
    comparable,
    single_process_plan,
    write_repository,
)
from tests.sites.peers import TASK_KEY, Monitor, WorkerProcess

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]


def router(sites: Sites, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> SiteRouter:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    config = from_values(sites.redis.url, **kwargs)
    assert config is not None
    return SiteRouter(config)


def test_a_two_site_plan_and_apply_match_one_process(
    sites: Sites,
    workers: dict[str, WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, local = baseline(sites, tmp_path, monkeypatch)

    # The central side has no BMC secret at all: the workers resolve and fingerprint them.
    engine = Engine(SETTINGS, clock=lambda: NOW, route=router(sites, monkeypatch))
    monitor = Monitor(sites.redis).__enter__()
    remote = engine.plan(repo).plan
    assert not remote.has_errors, [d.render() for d in remote.diagnostics]
    assert comparable(remote) == comparable(local)
    assert set(remote.credential_fingerprints) == {f"bmc-{s}" for s in SITES}

    order: list[tuple[int, ActionStatus]] = []

    def listen(action: Action, result: ActionResult) -> None:
        order.append((action.id, result.status))

    result = engine.apply(remote, listener=listen)
    monitor.__exit__()
    # Every raw message through the broker: references and fingerprints, never the value.
    messages = monitor.messages()
    assert any("fromEnv" in m and SECRET_ENV["east"] in m for m in messages)
    assert any("power.reset" in m for m in messages)
    assert any(m.startswith("RPUSH metalform:reply:") and '"live"' in m for m in messages)
    assert not [m for m in messages if LAB_PASSWORD in m]
    assert result.ok, [(r.address, r.operation, r.error) for r in result.results.values()]
    finished = [i for i, status in order if status is ActionStatus.SUCCEEDED]
    began = {i: n for n, (i, status) in enumerate(order) if status is ActionStatus.RUNNING}
    for action in remote.actions:
        for dependency in action.depends_on:
            done_at = next(
                n
                for n, (i, s) in enumerate(order)
                if i == dependency and s in {ActionStatus.SUCCEEDED}
            )
            assert done_at < began[action.id], (action.id, dependency)
    assert sorted(finished) == [a.id for a in remote.actions]
    # Converged, as seen by one process with every secret.
    assert not single_process_plan(repo, monkeypatch).actions


def test_a_site_without_worker_is_unreachable_and_named(
    sites: Sites,
    workers: dict[str, WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = write_repository(tmp_path / "repo", sites, extra_site="north")
    run = Engine(SETTINGS, clock=lambda: NOW, route=router(sites, monkeypatch)).plan(repo)
    warnings = [d.message for d in run.plan.diagnostics if d.severity is Severity.WARNING]
    assert any("site north" in w and "no live worker" in w for w in warnings), warnings
    north = run.gathered.live["Server/north-1"]
    assert not north.reachable
    assert "site north has no live worker" in (north.error or "")
    # The other sites proceed.
    assert all(run.gathered.live[f"Server/{s}-1"].reachable for s in SITES)


def test_a_forged_or_unsigned_task_is_refused_and_logged(
    sites: Sites, workers: dict[str, WorkerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone with access to the broker but not the task key cannot power a server off."""
    forger = router(sites, monkeypatch)
    bmc = sites.bmcs["east"]
    assert bmc.system_document("east-1")["PowerState"] == "On"
    repo_doc = {
        "apiVersion": "metalform/v1",
        "kind": "Server",
        "metadata": {"name": "east-1", "labels": {"site": "east"}},
        "spec": {"bmc": {"driver": "redfish", "address": bmc.url, "systemId": "east-1",
                         "credential": "bmc-east"}},
    }  # fmt: skip
    body = {
        "task": EXECUTE_TASK,
        "site": "east",
        "driver": "redfish",
        "run": "forged",
        "address": "Server/east-1",
        "action": {"id": 1, "address": "Server/east-1", "operation": "power.off"},
        "resources": {"Server/east-1": repo_doc},
        "reply": "metalform:reply:forged",
        "id": "metalform:reply:forged",
    }
    wrong = sign(body, b"not-the-task-key", ttl=60)
    tampered = {**sign(body, TASK_KEY.encode(), ttl=60), "payload": json.dumps(body)}
    for args in ([wrong], [tampered], [body]):
        forger.app.send_task(EXECUTE_TASK, args=args, queue="site-east")
    log = sites.tmp / "worker-east.log"
    deadline = time.monotonic() + 20
    while log.read_text().count("metalform.sites.worker: site east: refused") < 3:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    text = log.read_text()
    assert "refused a task: bad signature" in text
    assert "refused a task: the body is not a signed envelope" in text
    assert forger.client.llen("metalform:reply:forged") == 0
    assert bmc.system_document("east-1")["PowerState"] == "On"
