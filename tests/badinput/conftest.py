"""The fleet broken repositories are planned against: one BMC, served from memory."""

from __future__ import annotations

import pytest

from providers.memory import MemoryFleet, memory_factory
from reconciler import engine


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> MemoryFleet:
    """Every provider is the in-memory one: `fleet.calls` lists whatever would be changed."""
    f = MemoryFleet({"Server/n1": {"state": {"power": "Off"}}})
    factory = memory_factory(f)
    monkeypatch.setattr(
        engine, "installed_providers", lambda: {"redfish": factory, "ipmi": factory}
    )
    monkeypatch.setenv("BMC_PASSWORD", "pw-for-tests")
    monkeypatch.setenv("NO_COLOR", "1")
    return f
