"""The in-memory provider's read latency: `parallelism` BMCs answer at once, each in `read`."""

from __future__ import annotations

import time

from providers.memory import MemoryFleet, MemoryProvider
from reconciler.concurrency import Limiter
from reconciler.errors import MetalformError
from reconciler.load import resources_from_documents
from reconciler.model import Resource
from reconciler.provider import ProviderContext
from reconciler.secrets import ResolvedCredential


def no_credential(name: str) -> ResolvedCredential:
    raise MetalformError(f"no credential {name} in this test")


def servers(n: int) -> list[Resource]:
    docs = {
        f"Server/s{i}": {
            "apiVersion": "metalform/v1",
            "kind": "Server",
            "metadata": {"name": f"s{i}"},
            "spec": {
                "bmc": {"driver": "redfish", "address": f"http://10.0.0.{i}", "credential": "c"}
            },
        }
        for i in range(n)
    }
    return list(resources_from_documents(docs).values())


def test_a_read_takes_one_latency_per_round_of_parallel_requests() -> None:
    batch = servers(8)
    fleet = MemoryFleet({r.address: {"state": {"power": "On"}} for r in batch})
    provider = MemoryProvider(
        ProviderContext(limiter=Limiter(parallelism=4), credential=no_credential),
        fleet,
    )
    started = time.monotonic()
    provider.read(batch)
    assert time.monotonic() - started < 0.05  # no latency by default
    fleet.latency["read"] = 0.1
    started = time.monotonic()
    live = provider.read(batch)
    took = time.monotonic() - started
    assert 0.2 <= took < 0.5, took  # 8 BMCs, 4 at once: two rounds of 0.1 s
    assert {a: v.state["power"] for a, v in live.items()} == dict.fromkeys(live, "On")
