"""Gather: read the live state of the managed resources through their providers, concurrently."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reconciler.errors import MetalformError
from reconciler.model import Address, LiveResource, Resource
from reconciler.model.live import unreachable
from reconciler.provider import Provider, driver_key
from reconciler.secrets import REDACTOR


@dataclass(frozen=True)
class Gathered:
    live: dict[Address, LiveResource]
    seconds: float


def group_by_driver(resources: Sequence[Resource]) -> dict[str, list[Resource]]:
    groups: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        key = driver_key(resource)
        if key is not None:
            groups[key].append(resource)
    return dict(groups)


def gather(resources: Sequence[Resource], providers: Mapping[str, Provider]) -> Gathered:
    """Read every resource; each provider reads its share concurrently with the others.

    A provider that fails as a whole (cannot even start) marks its resources Unreachable;
    gather itself only raises for a missing provider, which is a setup error.
    """
    started = time.monotonic()
    groups = group_by_driver(resources)
    for key in groups:
        if key not in providers:
            raise MetalformError(f"no provider is installed for driver {key!r}")

    def read(key: str) -> Mapping[Address, LiveResource]:
        batch = groups[key]
        try:
            return providers[key].read(batch)
        except MetalformError as exc:
            message = REDACTOR(str(exc))
            return {r.address: unreachable(r.address, message) for r in batch}

    live: dict[Address, LiveResource] = {}
    if groups:
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="gather") as pool:
            for result in pool.map(read, list(groups)):
                live.update(result)
    return Gathered(live=live, seconds=time.monotonic() - started)
