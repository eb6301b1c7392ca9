"""Nova host aggregates <-> Metalform: the flat live state an Aggregate is compared in.

Nova keeps an aggregate's availability zone twice: as `availability_zone` and as the metadata
key of the same name. It is shown once, as `availabilityZone`; the metadata shown is the rest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.model import Address, LiveResource
from reconciler.planners.aggregate import AZ, HOSTS_PREFIX, METADATA_PREFIX

AZ_METADATA_KEY = "availability_zone"


def live_state(aggregate: Mapping[str, Any]) -> dict[str, Any]:
    """An aggregate as Nova returns it -> `availabilityZone`, `metadata.<k>`, `hosts.<h>`."""
    state: dict[str, Any] = {AZ: aggregate.get("availability_zone") or None}
    for key, value in sorted((aggregate.get("metadata") or {}).items()):
        if key != AZ_METADATA_KEY:
            state[METADATA_PREFIX + key] = value
    for host in sorted(aggregate.get("hosts") or []):
        state[HOSTS_PREFIX + host] = True
    return state


def hosts_elsewhere(
    name: str, hosts: Iterable[str], aggregates: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, str | None]]:
    """For each host, the other aggregates holding it and their zones (to order moves)."""
    wanted = set(hosts)
    found: dict[str, dict[str, str | None]] = {}
    for other in aggregates:
        if other.get("name") == name:
            continue
        for host in other.get("hosts") or []:
            if host in wanted:
                found.setdefault(host, {})[str(other["name"])] = (
                    other.get("availability_zone") or None
                )
    return found


def live_resource(
    address: Address,
    aggregate: Mapping[str, Any] | None,
    *,
    cloud: str,
    aggregates: Sequence[Mapping[str, Any]] = (),
    desired_hosts: Iterable[str] = (),
    instances: Mapping[str, int | None] | None = None,
    compute_hosts: Sequence[str] | None = None,
) -> LiveResource:
    """One Aggregate's live state and the facts its planner decides with."""
    state = live_state(aggregate) if aggregate is not None else {}
    members = {p.removeprefix(HOSTS_PREFIX) for p in state if p.startswith(HOSTS_PREFIX)}
    relevant = members | set(desired_hosts)
    facts: dict[str, Any] = {
        "cloud": cloud,
        "elsewhere": hosts_elsewhere(address.split("/", 1)[1], relevant, aggregates),
    }
    if aggregate is not None:
        facts["id"] = aggregate.get("id")
    if instances is not None:
        # A host Nova has no countable hypervisor for is left out: its planner refuses to guess.
        facts["instances"] = {
            h: instances[h] for h in sorted(relevant) if instances.get(h) is not None
        }
    if compute_hosts is not None:
        facts["computeHosts"] = sorted(compute_hosts)
    return LiveResource(address=address, exists=aggregate is not None, state=state, facts=facts)
