"""MAAS benchmark against the lab's MAAS simulator: gather and tag actions through python-libmaas.

    python bench/maas_bench.py [--machines 1000] [--actions 100] [--concurrency 4]
                               [--latency 0.02] [--rounds 3]

Starts one simulator with N machines on loopback, every API request held --latency seconds (a
region's database and network; 0 for the bare simulator), then times (best of --rounds):
  list/libmaas    python-libmaas's own client (`connect(...).machines.list()`), for reference;
  read/metalform  `MaasProvider.read` of N Servers (one `machines/` request, mapped to state);
  call latency    one `Machine.read` through `MaasClient` (p50 and p95 of 100 calls);
  tags            `provisioning.tags` on A machines from 16 worker threads with at most C
                  requests in flight to the region (each action: list machines, list tags,
                  update_nodes, read back), against the same actions one after the other.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metalform.lab.maas import LabMachine, MaasPeer, system_id_of
from providers.maas import MaasProvider
from providers.maas.client import ApiKey, MaasClient
from reconciler.concurrency import Limiter
from reconciler.model import Action, Resource
from tests.fixtures.maas import maas_server, make_context


def best_of(rounds: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=1000)
    parser.add_argument("--actions", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    names = [f"gpu-{i:04d}" for i in range(args.machines)]
    with (
        tempfile.TemporaryDirectory(prefix="maas-bench-") as tmp,
        MaasPeer(
            Path(tmp), [LabMachine(n) for n in names], port=0, delay=0.05, latency=args.latency
        ) as peer,
    ):
        from maas.client import connect

        libmaas = connect(peer.url, apikey=peer.api_key)
        t_list = best_of(args.rounds, lambda: libmaas.machines.list())

        context = make_context(peer)
        context.limiter = Limiter(parallelism=16, per_endpoint=args.concurrency)
        servers = [maas_server(n) for n in names]
        provider = MaasProvider(context)
        try:
            live = provider.read(servers)
            assert all(r.error is None for r in live.values())
            t_read = best_of(args.rounds, lambda: provider.read(servers))

            client = MaasClient(
                peer.url,
                ApiKey.parse(peer.api_key),
                credential="maas-key",
                limiter=Limiter(parallelism=1, per_endpoint=1),
                timeout=30,
            )
            latencies = []
            for i in range(100):
                started = time.perf_counter()
                client.machine(system_id_of(names[i % len(names)]))
                latencies.append(time.perf_counter() - started)
            client.close()

            targets = servers[: args.actions]

            def tag_all(tag: str, workers: int) -> None:
                def one(server: Resource) -> None:
                    provider.execute(
                        Action(
                            id=1,
                            address=server.address,
                            provider="maas",
                            operation="provisioning.tags",
                            params={"add": [tag], "remove": []},
                        ),
                        server,
                    )

                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(one, targets))

            rounds = iter(range(10_000))
            t_tags = best_of(args.rounds, lambda: tag_all(f"bench-{next(rounds)}", 16))
            t_tags_seq = best_of(1, lambda: tag_all(f"bench-{next(rounds)}", 1))
        finally:
            provider.close()

    q = statistics.quantiles(latencies, n=20)
    print(
        f"MAAS simulator, {args.machines} machines, {args.latency * 1000:g} ms per request, "
        f"best of {args.rounds}"
    )
    print(f"  list machines, python-libmaas client   {t_list * 1000:8.0f} ms")
    print(f"  read {args.machines} Servers, Metalform        {t_read * 1000:8.0f} ms")
    print(
        f"  one call through MaasClient            p50 {statistics.median(latencies) * 1000:.1f}"
        f" ms, p95 {q[18] * 1000:.1f} ms"
    )
    print(
        f"  {args.actions} tag actions, {args.concurrency} in flight      "
        f"{t_tags * 1000:8.0f} ms   (one after the other: {t_tags_seq * 1000:.0f} ms, "
        f"{t_tags_seq / t_tags:.1f}x)"
    )


if __name__ == "__main__":
    main()
