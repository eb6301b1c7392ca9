"""A plan of a 50-BMC farm: requests per BMC, the registry cache, deadlines and limits."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import pytest

from metalform.lab.farm import FarmThread, Fault
from metalform.lab.farm.repo import farm_server
from providers.redfish import RedfishProvider
from providers.redfish.registry import default_cache_dir
from reconciler.concurrency import Limiter
from reconciler.model import Health
from reconciler.provider import ProviderContext
from reconciler.secrets import ResolvedCredential, Secret
from tests.fleet.conftest import (
    FLEET,
    LATENCY,
    MODELS,
    PASSWORD,
    USERNAME,
    engine,
    write_repo,
)

READ_CHAIN = {"system": 1, "bios": 1, "settings": 1}
"""What a plan needs from a BMC whose registry is known: System, Bios, Bios settings."""
REGISTRY_WALK = {"registries": 1, "registry.file": 1, "registry": 1}


def _routes(farm: FarmThread) -> list[Counter[str]]:
    return [Counter(s["routes"]) for s in farm.stats()]


def test_first_plan_reads_each_registry_once_and_the_second_from_the_cache(
    fleet: FarmThread, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", fleet.urls)

    first = engine().plan(repo)

    assert first.plan.summary.unreachable == 0, first.plan.diagnostics[:3]
    routes = _routes(fleet)
    walked = [r for r in routes if r["registry"]]
    # One BMC per model walked to its registry; every BMC got its read chain and nothing else.
    assert len(walked) == MODELS
    for r in routes:
        expected = Counter(READ_CHAIN) + (Counter(REGISTRY_WALK) if r["registry"] else Counter())
        assert r == expected
    assert not any("on-disk cache" in d.message for d in first.plan.diagnostics)

    fleet.reset_stats()
    second = engine().plan(repo)

    assert all(r == Counter(READ_CHAIN) for r in _routes(fleet))
    cached = [d.message for d in second.plan.diagnostics if "on-disk cache" in d.message]
    assert len(cached) == MODELS
    assert sum(int(m.split("(")[1].split()[0]) for m in cached) == FLEET
    assert second.plan.summary.unreachable == 0
    # The registry still checks values: the plan is the same with the cached registry.
    assert [a.id for a in second.plan.actions] == [a.id for a in first.plan.actions]


def _entries() -> list[Path]:
    return sorted(default_cache_dir().glob("*.json"))


@pytest.mark.parametrize("damage", ["corrupted", "foreign", "truncated"])
def test_a_damaged_registry_cache_entry_is_detected_and_refetched(
    fleet: FarmThread, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    repo = write_repo(tmp_path / "repo", fleet.urls[:1])
    engine().plan(repo)
    (entry,) = _entries()
    data = json.loads(entry.read_text())
    if damage == "corrupted":
        # A value changed after the digest was taken: an attribute now looks read-only.
        name = next(iter(data["facts"]))
        data["facts"][name]["readOnly"] = not data["facts"][name]["readOnly"]
        entry.write_text(json.dumps(data))
    elif damage == "foreign":
        data["key"]["name"] = "OtherVendorBiosRegistry.v9_9_9"
        entry.write_text(json.dumps(data))
    else:
        entry.write_text(entry.read_text()[:100])
    fleet.reset_stats()

    with caplog.at_level(logging.WARNING, logger="metalform.providers.redfish"):
        run = engine().plan(repo)

    assert _routes(fleet)[0] == Counter(READ_CHAIN) + Counter(REGISTRY_WALK)
    assert not any("on-disk cache" in d.message for d in run.plan.diagnostics)
    assert any("refetching" in r.getMessage() for r in caplog.records)
    # The refetched registry replaced the bad entry.
    fleet.reset_stats()
    engine().plan(repo)
    assert _routes(fleet)[0] == Counter(READ_CHAIN)


def test_a_bmc_past_its_deadline_is_unreachable_and_the_plan_finishes_on_time(
    fleet: FarmThread, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", fleet.urls)
    fleet.set_fault(3, Fault("hang"))
    fleet.set_fault(7, Fault("drop"))
    fleet.set_fault(11, Fault("unavailable", retry_after=1))
    fleet.set_fault(13, Fault("slow"))
    timeout = 1.0  # the deadline is two request timeouts

    started = time.monotonic()
    run = engine(timeout=timeout, parallelism=64).plan(repo)
    elapsed = time.monotonic() - started

    live = {c.address: c for c in run.plan.changes}
    assert run.plan.summary.unreachable == 3
    unreachable = sorted(
        d.address for d in run.plan.diagnostics if d.address and "did not answer" in d.message
    )
    assert unreachable == ["Server/node-00003", "Server/node-00007", "Server/node-00011"], [
        d.render() for d in run.plan.diagnostics
    ]
    hung = next(d for d in run.plan.diagnostics if d.address == "Server/node-00003")
    assert "deadline" in hung.message or "timeout" in hung.message
    # The slow BMC (10x: 0.5 s a request) answered within its deadline.
    assert "Server/node-00013" in live
    # Bounded by the deadline (2 s) plus the healthy fleet's reads, not by retries of timeouts.
    assert elapsed < 2 * timeout + 3.0, elapsed


def _provider(parallelism: int, per_endpoint: int, **context: float) -> RedfishProvider:
    cred = ResolvedCredential(name="bmc", username=USERNAME, secret=Secret(PASSWORD))
    return RedfishProvider(
        ProviderContext(
            limiter=Limiter(parallelism, per_endpoint),
            credential=lambda name: cred,
            **context,  # type: ignore[arg-type]
        )
    )


def test_a_bmc_that_did_not_answer_fails_fast_until_its_circuit_closes(
    fleet: FarmThread,
) -> None:
    fleet.set_fault(5, Fault("hang"))
    provider = _provider(8, 2, timeout=0.5, deadline=0.8)
    try:
        first = provider.read([farm_server("a", fleet.urls[5])])
        requests_after_first = fleet.stats()[5]["requests"]
        started = time.monotonic()
        second = provider.read([farm_server("b", fleet.urls[5])])
        fast = time.monotonic() - started
    finally:
        provider.close()

    assert first[farm_server("a", "").address].health is Health.UNREACHABLE
    assert second[farm_server("b", "").address].health is Health.UNREACHABLE
    assert "0.8s deadline" in (first[farm_server("a", "").address].error or "")
    # The open circuit answered for the BMC: no request, no timeout.
    assert fleet.stats()[5]["requests"] == requests_after_first
    assert fast < 0.2, fast


def test_an_untrusted_certificate_is_a_permanent_error_not_retried(fleet: FarmThread) -> None:
    provider = _provider(8, 2)
    started = time.monotonic()
    try:
        live = provider.read([farm_server("tls", fleet.urls[9], verify_tls=True)])
    finally:
        provider.close()

    (item,) = live.values()
    assert item.health is Health.UNREACHABLE
    assert "certificate" in (item.error or "")
    assert fleet.stats()[9]["requests"] == 0  # refused at the handshake
    # Not retried: a retry would wait at least 0.5 s first.
    assert time.monotonic() - started < 0.5


def test_the_per_bmc_limit_holds_when_many_servers_share_a_bmc(fleet: FarmThread) -> None:
    # 12 Servers behind each of 3 BMCs (the provider is given them directly: the desired
    # state refuses two Servers on one BMC system), read with room for 36 at once, 2 per BMC.
    servers = [farm_server(f"n{i}", fleet.urls[i % 3]) for i in range(36)]
    provider = _provider(36, 2)
    try:
        live = provider.read(servers)
    finally:
        provider.close()

    unreachable = {a: i.error for a, i in live.items() if i.health is Health.UNREACHABLE}
    assert not unreachable, unreachable
    stats = fleet.stats()[:3]
    assert all(s["requests"] >= 12 * 3 for s in stats), stats
    assert max(s["peak"] for s in stats) <= 2, stats


def test_reads_overlap_across_bmcs(fleet: FarmThread, tmp_path: Path) -> None:
    """50 BMCs at 50 ms a request, 3 requests each: far less than reading them one by one."""
    repo = write_repo(tmp_path / "repo", fleet.urls)
    engine().plan(repo)  # registries cached

    started = time.monotonic()
    run = engine().plan(repo)
    elapsed = time.monotonic() - started

    assert run.plan.summary.unreachable == 0, [d.render() for d in run.plan.diagnostics]
    assert elapsed < FLEET * 3 * LATENCY / 4, elapsed
