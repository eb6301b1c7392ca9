"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.rollout_fleet import write_repo


@pytest.fixture
def rollout_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A desired-state repository of 20 servers in 2 racks, with a rollout Policy."""
    return write_repo(tmp_path, monkeypatch)
