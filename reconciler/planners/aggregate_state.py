"""An Aggregate's flat state: its paths, what Git declares of it, the hosts it names.

Live state (what the openstack provider reads) is flat: `availabilityZone`, `metadata.<key>`
and `hosts.<hostname>: true` per member host, so a diff names the one host or key that
changes. The provider builds its live state with these names; the planner compares them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.model import Address, Resource, find, is_of
from reconciler.model.hardware import ServerSpec
from reconciler.model.openstack import RESERVED_METADATA_PREFIX, AggregateSpec

DRIVER = "openstack"
"""Driver key of the provider that executes every Aggregate action."""

AZ = "availabilityZone"
METADATA_PREFIX = "metadata."
HOSTS_PREFIX = "hosts."

MANAGED_KEY = RESERVED_METADATA_PREFIX + "managed"
"""Metadata key Metalform sets on the aggregates it creates (and only those): the mark that
lets it delete one Git no longer declares. Hidden from the compared state; reserved."""


def hostname(server: Resource[ServerSpec]) -> str:
    """The name Nova knows a Server by: `spec.hostname`, else its name."""
    return server.spec.hostname or server.name


def desired_hosts(
    aggregate: Resource[AggregateSpec], resources: Mapping[Address, Resource]
) -> list[str] | None:
    """The hostnames an Aggregate declares, sorted; None when it does not manage its hosts."""
    spec = aggregate.spec
    if spec.hosts is not None:
        found = set()
        for name in spec.hosts:
            server = find(resources, f"Server/{name}", ServerSpec)
            # A dangling name is a load error already; the name itself is the best guess here.
            found.add(hostname(server) if server is not None else name)
        return sorted(found)
    if spec.selector is not None:
        return sorted(
            {
                hostname(r)
                for r in resources.values()
                if r.kind == "Server"
                and is_of(r, ServerSpec)
                and spec.selector.matches(r.metadata.labels)
            }
        )
    return None


def desired_state(
    aggregate: Resource[AggregateSpec], resources: Mapping[Address, Resource]
) -> dict[str, Any]:
    """The declared fields of an Aggregate as flat paths; undeclared fields are not compared."""
    spec = aggregate.spec
    want: dict[str, Any] = {}
    if spec.availability_zone is not None:
        want[AZ] = spec.availability_zone
    for key, value in spec.metadata.items():
        want[METADATA_PREFIX + key] = value
    for host in desired_hosts(aggregate, resources) or []:
        want[HOSTS_PREFIX + host] = True
    return want


def zones_conflict(target: str | None, source: str | None) -> bool:
    """Nova keeps a host in one availability zone: two different named zones conflict."""
    return target is not None and source is not None and target != source


def peers(
    aggregate: Resource[AggregateSpec], resources: Mapping[Address, Resource]
) -> list[Resource[AggregateSpec]]:
    """The other desired Aggregates on the same cloud (Provider)."""
    return [
        r
        for r in resources.values()
        if r.kind == "Aggregate"
        and is_of(r, AggregateSpec)
        and r.name != aggregate.name
        and r.spec.provider == aggregate.spec.provider
    ]
