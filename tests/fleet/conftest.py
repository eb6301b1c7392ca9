"""Fixtures: a BMC farm of 50 TLS BMCs on loopback, one per pytest-xdist worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.lab.farm import DEFAULT_MODELS, FarmConfig, FarmThread
from metalform.lab.farm.repo import write_fleet_repo
from reconciler.engine import Engine, Settings

FLEET = 50
USERNAME = "farm-admin"
PASSWORD = "farm-Pa55word-not-for-logs"
PASSWORD_ENV = "FLEET_TEST_BMC_PASSWORD"
LATENCY = 0.05


@pytest.fixture(scope="module")
def farm() -> Iterator[FarmThread]:
    running = FarmThread(
        FarmConfig(count=FLEET, latency=LATENCY, limit=2, username=USERNAME, password=PASSWORD)
    ).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fleet(farm: FarmThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FarmThread:
    """The farm with its counters at zero and no faults; an empty registry cache."""
    farm.reset_stats()
    for index in range(FLEET):
        farm.set_fault(index, None)
    monkeypatch.setenv("METALFORM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    return farm


def write_repo(root: Path, urls: list[str]) -> Path:
    """A repository declaring one Server per URL (node-00000, ...; repeat a URL for several on
    one BMC), logging in with the farm's credential from PASSWORD_ENV."""
    write_fleet_repo(root, urls, USERNAME, f"{{fromEnv: {PASSWORD_ENV}}}")
    return root


def engine(**settings: float) -> Engine:
    return Engine(Settings(**settings))  # type: ignore[arg-type]


MODELS = len(DEFAULT_MODELS)
