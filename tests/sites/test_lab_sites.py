"""`metalform lab up --sites 2`: a broker, and per site a BMC and a worker, that plans work on."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from metalform.lab.sites import (
    BROKER_PASSWORD_VAR,
    CENTRAL_VARS,
    bmc_password_var,
    down_sites,
    read_env,
    status_sites,
    up_sites,
)
from metalform.sites.config import from_values
from metalform.sites.dispatch import SiteRouter
from reconciler.engine import Engine, Settings
from reconciler.model.credentials import SecretRef
from tests.sites.peers import free_port, free_ports

pytestmark = [pytest.mark.peer, pytest.mark.slow, pytest.mark.xdist_group("sites")]


def test_lab_sites_up_plan_status_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "sites"
    central = {var: f"lab-test-{var.lower()}" for var in CENTRAL_VARS}
    lines: list[str] = []
    layout = up_sites(
        root, 2, central, lines.append, redis_port=free_port(), bmc_base_port=free_ports(2)
    )
    try:
        assert list(layout.sites) == ["site1", "site2"]
        assert any("site site2: metalform worker --site site2 serving" in line for line in lines)
        # Each site's BMC password is in its own 0600 env file, and nowhere in the output.
        for site in layout.sites:
            env_file = root / site / "env"
            assert stat.S_IMODE(os.stat(env_file).st_mode) == 0o600
            secret = read_env(env_file)[bmc_password_var(site)]
            assert not any(secret in line for line in lines)
        assert not any(central[BROKER_PASSWORD_VAR] in line for line in lines)
        conf = root / "redis" / "redis.conf"
        assert stat.S_IMODE(os.stat(conf).st_mode) == 0o600

        # The centre plans the written inventory with the broker password and keys only.
        for var, value in central.items():
            monkeypatch.setenv(var, value)
        config = from_values(layout.broker, password=SecretRef(from_env=BROKER_PASSWORD_VAR))
        assert config is not None
        engine = Engine(
            Settings(timeout=5.0, retries=1),
            clock=lambda: datetime(2026, 1, 1, tzinfo=UTC),
            route=SiteRouter(config),
        )
        plan = engine.plan(root / "inventory").plan
        assert not plan.has_errors, [d.render() for d in plan.diagnostics]
        assert sorted((a.address, a.operation) for a in plan.actions) == [
            ("Server/site1-001", "power.on"),
            ("Server/site2-001", "power.on"),
        ]

        status: list[str] = []
        assert status_sites(root, central[BROKER_PASSWORD_VAR], status.append)
        assert sum("worker   running" in line and "heartbeat seen" in line for line in status) == 2
    finally:
        assert down_sites(root)
    after: list[str] = []
    assert not status_sites(root, central[BROKER_PASSWORD_VAR], after.append)
    assert all("running" not in line for line in after), after
