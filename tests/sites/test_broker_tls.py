"""The broker over TLS (a real redis-server that speaks only TLS): workers and the central
side verify its certificate against --broker-ca, and a plan over two sites matches one
process; without the CA, the certificate is refused with the reason, quickly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metalform.cli import main
from metalform.sites.config import from_values
from metalform.sites.dispatch import SiteRouter
from reconciler.engine import Engine
from tests.sites.conftest import (
    NOW,
    SETTINGS,
    SITES,
    Sites,
    baseline,
    comparable,
)
from tests.sites.peers import TASK_KEY, WorkerProcess

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]
BROKER_TLS = True


def test_a_plan_through_a_tls_broker_matches_one_process(
    sites: Sites,
    workers: dict[str, WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sites.redis.url.startswith("rediss://")
    repo, local = baseline(sites, tmp_path, monkeypatch)
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    config = from_values(sites.redis.url, ca_file=str(sites.redis.ca_file))
    assert config is not None
    remote = Engine(SETTINGS, clock=lambda: NOW, route=SiteRouter(config)).plan(repo).plan
    assert not remote.has_errors, [d.render() for d in remote.diagnostics]
    assert comparable(remote) == comparable(local)
    assert local.actions  # the comparison covers a plan with work in it


def test_without_the_ca_the_broker_certificate_is_refused(
    sites: Sites,
    workers: dict[str, WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("METALFORM_TASK_KEY", TASK_KEY)
    started = time.monotonic()
    code = main(["status", "-C", str(tmp_path), "--broker", sites.redis.url])
    out = capsys.readouterr()
    assert time.monotonic() - started < 20
    assert code != 0
    assert "certificate verify failed" in out.err, out.err
    # With the CA, the same command sees both sites' workers.
    args = ["--broker", sites.redis.url, "--broker-ca", str(sites.redis.ca_file)]
    main(["status", "-C", str(tmp_path), *args])
    shown = capsys.readouterr().out
    for site in SITES:
        assert f"site {site}: queued 0" in shown
