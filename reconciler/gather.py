"""Gather: read the live state of the managed resources through their providers, concurrently."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from reconciler.errors import MetalformError
from reconciler.model import Address, Health, LiveResource, Resource, is_of
from reconciler.model.live import unreachable
from reconciler.model.providers import ProviderSpec
from reconciler.provider import Discovering, Provider, drivers
from reconciler.secrets import REDACTOR

# When two providers read parts of one resource, the worse health wins.
_HEALTH_ORDER = [
    Health.HEALTHY,
    Health.UNKNOWN,
    Health.PROGRESSING,
    Health.DEGRADED,
    Health.UNREACHABLE,
]


@dataclass(frozen=True)
class Gathered:
    live: dict[Address, LiveResource]
    seconds: float
    discovered: dict[Address, LiveResource] = field(default_factory=dict)
    """Live objects Metalform manages that no desired resource declares (to be deleted)."""


def group_by_driver(
    resources: Sequence[Resource], everything: Mapping[Address, Resource] | None = None
) -> dict[str, list[Resource]]:
    everything = everything if everything is not None else {r.address: r for r in resources}
    groups: dict[str, list[Resource]] = defaultdict(list)
    for resource in resources:
        for key in drivers(resource, everything):
            groups[key].append(resource)
    return dict(groups)


def merge(parts: Sequence[LiveResource]) -> LiveResource:
    """One resource read by several providers (a Server's BMC and MAAS): one view of it."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    health = max((p.health for p in parts), key=_HEALTH_ORDER.index)
    errors = [p.error for p in parts if p.error]
    return LiveResource(
        address=first.address,
        exists=all(p.exists for p in parts),
        state={k: v for p in parts for k, v in p.state.items()},
        pending={k: v for p in parts for k, v in p.pending.items()},
        facts={k: v for p in parts for k, v in p.facts.items()},
        health=health,
        error="; ".join(errors) or None,
    )


def _scrubbed(item: LiveResource) -> LiveResource:
    """`item` with known secrets redacted from its error text."""
    if item.error:
        clean = REDACTOR(item.error)
        if clean != item.error:
            return item.model_copy(update={"error": clean})
    return item


def gather(
    resources: Sequence[Resource],
    providers: Mapping[str, Provider],
    everything: Mapping[Address, Resource] | None = None,
    *,
    discover: bool = False,
) -> Gathered:
    """Read every resource; each provider reads its share concurrently with the others.

    A provider that fails as a whole marks its resources Unreachable; gather itself only
    raises for a missing provider, which is a setup error. With `discover`, providers that
    create things also list what Metalform manages, so deleted resources can be planned.
    """
    started = time.monotonic()
    everything = everything if everything is not None else {r.address: r for r in resources}
    groups = group_by_driver(resources, everything)
    for key in groups:
        if key not in providers:
            raise MetalformError(f"no provider is installed for driver {key!r}")
    scopes: dict[str, list[Resource]] = defaultdict(list)
    if discover:
        for resource in everything.values():
            if resource.kind != "Provider" or not is_of(resource, ProviderSpec):
                continue
            if isinstance(providers.get(resource.spec.type.value), Discovering):
                scopes[resource.spec.type.value].append(resource)

    def read(key: str) -> tuple[Mapping[Address, LiveResource], Mapping[Address, LiveResource]]:
        provider = providers[key]
        batch = groups.get(key, [])
        try:
            live = provider.read(batch) if batch else {}
        except MetalformError as exc:
            message = REDACTOR(str(exc))
            live = {r.address: unreachable(r.address, message) for r in batch}
        # A failure reported as data (an Unreachable result) may quote a credential as easily
        # as an exception does, and plans carry it to files, the state store and forges.
        live = {address: _scrubbed(item) for address, item in live.items()}
        found: Mapping[Address, LiveResource] = {}
        if key in scopes and isinstance(provider, Discovering):
            try:
                found = provider.discover(scopes[key])
            except MetalformError:
                found = {}  # cannot list: plan no deletes rather than guess
        return live, found

    parts: dict[Address, list[LiveResource]] = defaultdict(list)
    discovered: dict[Address, LiveResource] = {}
    keys = sorted(set(groups) | set(scopes))
    if keys:
        with ThreadPoolExecutor(max_workers=len(keys), thread_name_prefix="gather") as pool:
            for live, found in pool.map(read, keys):
                for address, item in live.items():
                    parts[address].append(item)
                discovered.update(found)
    merged = {address: merge(items) for address, items in parts.items()}
    orphans = {a: live for a, live in discovered.items() if a not in everything}
    return Gathered(live=merged, seconds=time.monotonic() - started, discovered=orphans)
