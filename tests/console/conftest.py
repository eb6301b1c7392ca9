"""Fixtures of the console tests: the server tests' harness (see `tests.server.harness`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import Harness, make_harness


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """The app on SQLite, without forge reporting."""
    yield from make_harness(tmp_path, monkeypatch, forge=None)
