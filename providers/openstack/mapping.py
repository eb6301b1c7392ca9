"""Nova host aggregates <-> Metalform: the flat live state an Aggregate is compared in.

Nova keeps an aggregate's availability zone twice: as `availability_zone` and as the metadata
key of the same name. It is shown once, as `availabilityZone`; the metadata shown is the rest,
but for Metalform's own mark (`metalform:managed`), which is a fact, not state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from reconciler.model import API_VERSION, Address, LiveResource
from reconciler.model.openstack import RESERVED_METADATA_PREFIX
from reconciler.planners.aggregate import AZ, HOSTS_PREFIX, MANAGED_KEY, METADATA_PREFIX

AZ_METADATA_KEY = "availability_zone"


def live_state(aggregate: Mapping[str, Any]) -> dict[str, Any]:
    """An aggregate as Nova returns it -> `availabilityZone`, `metadata.<k>`, `hosts.<h>`."""
    state: dict[str, Any] = {AZ: aggregate.get("availability_zone") or None}
    for key, value in sorted((aggregate.get("metadata") or {}).items()):
        if key != AZ_METADATA_KEY and not key.startswith(RESERVED_METADATA_PREFIX):
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


def is_managed(aggregate: Mapping[str, Any]) -> bool:
    """Whether Metalform created this aggregate (and may delete it when Git drops it)."""
    return (aggregate.get("metadata") or {}).get(MANAGED_KEY) == "true"


def live_resource(
    address: Address,
    aggregate: Mapping[str, Any] | None,
    *,
    cloud: str,
    aggregates: Sequence[Mapping[str, Any]] = (),
    desired_hosts: Iterable[str] = (),
    instances: Mapping[str, int | None] | None = None,
    compute_hosts: Sequence[str] | None = None,
    provider: str | None = None,
) -> LiveResource:
    """One Aggregate's live state and the facts its planner decides with; `provider` adds the
    document apply needs to delete it (a discovered aggregate Git no longer declares)."""
    state = live_state(aggregate) if aggregate is not None else {}
    members = {p.removeprefix(HOSTS_PREFIX) for p in state if p.startswith(HOSTS_PREFIX)}
    relevant = members | set(desired_hosts)
    facts: dict[str, Any] = {
        "cloud": cloud,
        "elsewhere": hosts_elsewhere(address.split("/", 1)[1], relevant, aggregates),
    }
    if aggregate is not None:
        facts["id"] = aggregate.get("id")
        facts["managed"] = is_managed(aggregate)
    if provider is not None:
        facts["document"] = {
            "apiVersion": API_VERSION,
            "kind": "Aggregate",
            "metadata": {"name": address.split("/", 1)[1]},
            "spec": {"provider": provider},
        }
    if instances is not None:
        # A host Nova has no countable hypervisor for is left out: its planner refuses to guess.
        facts["instances"] = {
            h: instances[h] for h in sorted(relevant) if instances.get(h) is not None
        }
    if compute_hosts is not None:
        facts["computeHosts"] = sorted(compute_hosts)
    return LiveResource(address=address, exists=aggregate is not None, state=state, facts=facts)


def service_condition(service: Mapping[str, Any]) -> str:
    """`nova-compute on gpu-host-001 is down (forced down) and disabled: maintenance`."""
    state = str(service.get("state") or "unknown")
    if service.get("forcedDown"):
        state += " (forced down)"
    text = f"nova-compute on {service.get('host')} is {state} and {service.get('status')}"
    reason = service.get("disabledReason")
    return f"{text}: {reason}" if reason and service.get("status") == "disabled" else text
