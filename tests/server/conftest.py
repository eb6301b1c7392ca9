"""Fixtures of the server tests: see `tests.server.harness`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.forge import FakeForge
from tests.server.harness import Harness, make_harness


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The app on SQLite, without forge reporting."""
    yield from make_harness(tmp_path, monkeypatch, forge=None)


@pytest.fixture
def forge_harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_forge: FakeForge
) -> Iterator[Harness]:
    """The app on SQLite, reporting to the fake forge."""
    yield from make_harness(tmp_path, monkeypatch, forge=fake_forge)
