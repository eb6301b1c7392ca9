"""Planning one Aggregate: an OpenStack Nova host aggregate, its zone, metadata and hosts.

Pure: the desired Aggregate and its live state in, a change, action drafts and diagnostics out.

Live state (what the openstack provider reads) is flat: `availabilityZone`, `metadata.<key>`
and `hosts.<hostname>: true` per member host, so a diff names the one host or key that
changes. Facts (not compared) carry what the planner needs to decide and order:

- `instances`: `{hostname: count}` of instances running on each host of the cloud it counted;
- `computeHosts`: the compute hosts the cloud knows (an unknown host is an error, not an action,
  unless its Server is being deployed by MAAS: then the add waits for it to register);
- `elsewhere`: `{hostname: {aggregate name: zone or None}}`, the other aggregates that hold
  the desired and member hosts, to order a host's move between two aggregates.

A host moving between two aggregates joins the target before it leaves the source, so it is
never outside both; unless both aggregates carry different availability zones, which Nova
refuses for one host: then it leaves first. Removing a host that still runs instances is
refused when `onInstances: Refuse`. An aggregate Metalform created (marked with MANAGED_KEY)
that Git no longer declares is emptied and deleted. A host whose Server MAAS deploys in the same
plan joins after the deployment succeeded (and not at all if it failed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.model import (
    Address,
    Change,
    ChangeKind,
    Diagnostic,
    DiffEntry,
    Expectation,
    LiveResource,
    Resource,
    Severity,
)
from reconciler.model.hardware import ProvisioningState
from reconciler.model.openstack import RESERVED_METADATA_PREFIX, OnInstances
from reconciler.model.plan import ActionStatus
from reconciler.planners.provisioning import DEPLOY_KEY
from reconciler.planners.provisioning import STATE as PROVISIONING_STATE
from reconciler.planners.server import Draft, PlanContext, ResourcePlan

DRIVER = "openstack"
"""Driver key of the provider that executes every Aggregate action."""

AZ = "availabilityZone"
METADATA_PREFIX = "metadata."
HOSTS_PREFIX = "hosts."

MANAGED_KEY = RESERVED_METADATA_PREFIX + "managed"
"""Metadata key Metalform sets on the aggregates it creates (and only those): the mark that
lets it delete one Git no longer declares. Hidden from the compared state; reserved."""


def hostname(server: Resource) -> str:
    """The name Nova knows a Server by: `spec.hostname`, else its name."""
    name = getattr(server.spec, "hostname", None)
    return str(name) if name else server.name


def desired_hosts(aggregate: Resource, resources: Mapping[Address, Resource]) -> list[str] | None:
    """The hostnames an Aggregate declares, sorted; None when it does not manage its hosts."""
    spec = aggregate.spec
    if spec.hosts is not None:
        found = set()
        for name in spec.hosts:
            server = resources.get(f"Server/{name}")
            # A dangling name is a load error already; the name itself is the best guess here.
            found.add(hostname(server) if server is not None else name)
        return sorted(found)
    if spec.selector is not None:
        return sorted(
            {
                hostname(r)
                for r in resources.values()
                if r.kind == "Server" and spec.selector.matches(r.metadata.labels)
            }
        )
    return None


def _being_deployed(server: Resource, ctx: PlanContext) -> bool:
    """The Server is to be Deployed by MAAS and is not yet (so Nova cannot know it yet)."""
    provisioning = getattr(server.spec, "provisioning", None)
    if provisioning is None or provisioning.state is not ProvisioningState.DEPLOYED:
        return False
    live = ctx.live.get(server.address)
    return (live is not None and live.reachable
            and live.state.get(PROVISIONING_STATE) not in (None, "Deployed"))


def desired_state(aggregate: Resource, resources: Mapping[Address, Resource]) -> dict[str, Any]:
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


def _zones_conflict(target: str | None, source: str | None) -> bool:
    """Nova keeps a host in one availability zone: two different named zones conflict."""
    return target is not None and source is not None and target != source


def _peers(aggregate: Resource, resources: Mapping[Address, Resource]) -> list[Resource]:
    """The other desired Aggregates on the same cloud (Provider)."""
    return [
        r
        for r in resources.values()
        if r.kind == "Aggregate"
        and r.name != aggregate.name
        and r.spec.provider == aggregate.spec.provider
    ]


def plan_aggregate(
    aggregate: Resource | None, live: LiveResource | None, ctx: PlanContext
) -> ResourcePlan:
    """Create an aggregate, set its zone and metadata, add and remove its hosts."""
    if aggregate is None:
        assert live is not None, "a deletion is planned only for a discovered aggregate"
        return _plan_delete(live)
    address = aggregate.address
    spec = aggregate.spec
    result = ResourcePlan(
        address, Change(address=address, action=ChangeKind.NOOP, source=aggregate.source)
    )

    def diag(severity: Severity, message: str, path: tuple[str | int, ...] = ()) -> None:
        location = ctx.locate(address, path) if path else None
        result.diagnostics.append(
            Diagnostic(
                severity=severity,
                message=message,
                address=address,
                field=".".join(str(p) for p in path) or None,
                location=location or aggregate.location,
            )
        )

    if live is None or not live.reachable:
        why = live.error if live is not None and live.error else "no provider answered"
        diag(Severity.WARNING, f"cannot read the aggregate, nothing planned for it: {why}")
        result.reachable = False
        return result

    facts = live.facts
    hosts_path: tuple[str, ...] = ("spec", "hosts" if spec.hosts is not None else "selector")
    want = desired_state(aggregate, ctx.resources)
    servers = {hostname(r): r for r in ctx.resources.values() if r.kind == "Server"}
    awaiting: set[str] = set()
    known = facts.get("computeHosts")
    if isinstance(known, list):
        for path in [p for p in want if p.startswith(HOSTS_PREFIX)]:
            host = path.removeprefix(HOSTS_PREFIX)
            if host in known:
                continue
            server = servers.get(host)
            if server is not None and _being_deployed(server, ctx):
                # Its nova-compute registers once MAAS has deployed it: the add waits for that.
                awaiting.add(host)
                continue
            want.pop(path)
            diag(
                Severity.ERROR,
                f"host {host!r} is not a compute host of the cloud of "
                f"Provider/{spec.provider}; it is not added",
                hosts_path,
            )
    managed_hosts = spec.hosts is not None or spec.selector is not None
    live_state = live.state if live.exists else {}
    # Declared mappings are compared whole: a key or host the aggregate has but Git dropped goes.
    for path in live_state:
        if path in want:
            continue
        if (path.startswith(METADATA_PREFIX) and "metadata" in spec.model_fields_set) or (
            path.startswith(HOSTS_PREFIX) and managed_hosts
        ):
            want[path] = None

    diff = [
        DiffEntry(path=p, before=live_state.get(p), after=v)
        for p, v in sorted(want.items())
        if live_state.get(p) != v
    ]
    if not diff:
        return result
    creating = not live.exists
    result.change = result.change.model_copy(
        update={"action": ChangeKind.CREATE if creating else ChangeKind.UPDATE, "diff": diff}
    )
    changed = {d.path: d.after for d in diff}
    drafts = result.drafts
    before: tuple[str, ...] = ()
    zone: str | None = spec.availability_zone
    live_zone: str | None = live_state.get(AZ)

    if creating:
        drafts.append(
            Draft(
                key="create",
                operation="aggregate.create",
                params={"name": aggregate.name, AZ: zone},
                provider=DRIVER,
                expect=Expectation(current={AZ: zone}),
                description=f"create the aggregate{f' in zone {zone}' if zone else ''}",
            )
        )
        before = ("create",)
    elif AZ in changed:
        members = [p for p in live_state if p.startswith(HOSTS_PREFIX)]
        drafts.append(
            Draft(
                key="zone",
                operation="aggregate.set_availability_zone",
                params={AZ: zone},
                # Its hosts' instances change zone with it.
                disruptive=bool(members),
                provider=DRIVER,
                expect=Expectation(current={AZ: zone}),
                description=f"move the aggregate from zone {live_zone} to {zone}",
            )
        )
        before = ("zone",)

    metadata = {
        p.removeprefix(METADATA_PREFIX): v for p, v in changed.items()
        if p.startswith(METADATA_PREFIX)
    }
    if metadata:
        drafts.append(
            Draft(
                key="metadata",
                operation="aggregate.set_metadata",
                params={"metadata": metadata},
                after=before[:1] if creating else (),
                provider=DRIVER,
                expect=Expectation(current={METADATA_PREFIX + k: v for k, v in metadata.items()}),
                description="set metadata " + ", ".join(
                    f"{k}={v}" if v is not None else f"-{k}" for k, v in sorted(metadata.items())
                ),
            )
        )

    elsewhere: Mapping[str, Mapping[str, str | None]] = facts.get("elsewhere") or {}
    peers = _peers(aggregate, ctx.resources)
    peer_hosts = {p.name: set(desired_hosts(p, ctx.resources) or ()) for p in peers}
    peer_managed = {p.name: desired_hosts(p, ctx.resources) is not None for p in peers}
    peer_zone = {p.name: p.spec.availability_zone for p in peers}
    instances: Mapping[str, int] = facts.get("instances") or {}

    for path, after in changed.items():
        if not path.startswith(HOSTS_PREFIX):
            continue
        host = path.removeprefix(HOSTS_PREFIX)
        if after:
            deps = list(before)
            for other, other_zone in sorted(elsewhere.get(host, {}).items()):
                leaving = (
                    other in peer_hosts and peer_managed[other] and host not in peer_hosts[other]
                )
                if not _zones_conflict(zone, other_zone):
                    continue
                if leaving:
                    # Nova refuses one host in two zones: it leaves the other aggregate first.
                    deps.append(f"Aggregate/{other}:remove:{host}")
                else:
                    diag(
                        Severity.ERROR,
                        f"host {host!r} cannot join zone {zone}: it stays in aggregate "
                        f"{other} of zone {other_zone}, and Nova keeps a host in one zone",
                        hosts_path,
                    )
            server = servers.get(host)
            if server is not None:
                # A host MAAS (re)deploys in this plan joins once it is deployed.
                deps.append(f"{server.address}:{DEPLOY_KEY}")
            waits = host in awaiting
            drafts.append(
                Draft(
                    key=f"add:{host}",
                    operation="aggregate.add_host",
                    params={"host": host, "awaitCompute": True} if waits else {"host": host},
                    after=tuple(deps),
                    provider=DRIVER,
                    expect=Expectation(current={path: True}),
                    description=f"add host {host}"
                    + (" once MAAS has deployed it and its nova-compute has registered"
                       if waits else ""),
                )
            )
        else:
            deps = []
            for other in sorted(peer_hosts):
                if host not in peer_hosts[other] or other in elsewhere.get(host, {}):
                    continue
                if not _zones_conflict(peer_zone[other], live_zone):
                    # Join the target first, so the host is never outside both aggregates.
                    deps.append(f"Aggregate/{other}:add:{host}")
            count = instances.get(host)
            status, reason = ActionStatus.PLANNED, ""
            if spec.on_instances is OnInstances.REFUSE and count != 0:
                status = ActionStatus.REFUSED
                reason = (
                    f"host {host} still runs {count} instances"
                    if count is not None
                    else f"the instances of host {host} could not be counted"
                )
                diag(
                    Severity.WARNING,
                    f"aggregate.remove_host refused: {reason} (onInstances: Refuse; migrate "
                    "them, or set onInstances: Allow)",
                    ("spec", "onInstances") if "on_instances" in spec.model_fields_set
                    else hosts_path,
                )
            drafts.append(
                Draft(
                    key=f"remove:{host}",
                    operation="aggregate.remove_host",
                    params={"host": host},
                    disruptive=True,
                    after=tuple(deps),
                    provider=DRIVER,
                    status=status,
                    reason=reason,
                    expect=Expectation(current={path: None}),
                    description=f"remove host {host}"
                    + (f" ({count} instances keep running)" if count else ""),
                )
            )
    return result


def _plan_delete(live: LiveResource) -> ResourcePlan:
    """An aggregate Metalform created that Git no longer declares: empty it, then delete it.

    Its hosts leave first (Nova deletes only empty aggregates); a host that still runs
    instances is refused, as `onInstances: Refuse` (the default) would: empty the aggregate
    through Git first (`hosts: []` with `onInstances: Allow`), then drop it.
    """
    address = live.address
    result = ResourcePlan(address, Change(address=address, action=ChangeKind.NOOP))
    if not live.reachable or not live.exists or not live.facts.get("managed"):
        return result
    result.change = Change(
        address=address,
        action=ChangeKind.DELETE,
        diff=[DiffEntry(path=p, before=v) for p, v in sorted(live.state.items())],
    )
    instances: Mapping[str, int] = live.facts.get("instances") or {}
    removals = []
    for path in sorted(p for p in live.state if p.startswith(HOSTS_PREFIX)):
        host = path.removeprefix(HOSTS_PREFIX)
        count = instances.get(host)
        status, reason = ActionStatus.PLANNED, ""
        if count != 0:
            status = ActionStatus.REFUSED
            reason = (
                f"host {host} still runs {count} instances"
                if count is not None
                else f"the instances of host {host} could not be counted"
            )
            result.diagnostics.append(
                Diagnostic(
                    severity=Severity.WARNING,
                    address=address,
                    message=f"deleting the aggregate is refused: {reason} (empty it through Git "
                    "first: hosts: [] with onInstances: Allow, then drop it)",
                )
            )
        removals.append(f"remove:{host}")
        result.drafts.append(
            Draft(
                key=f"remove:{host}",
                operation="aggregate.remove_host",
                params={"host": host},
                disruptive=True,
                provider=DRIVER,
                status=status,
                reason=reason,
                expect=Expectation(current={path: None}),
                description=f"remove host {host}",
            )
        )
    result.drafts.append(
        Draft(
            key="delete",
            operation="aggregate.delete",
            params={},
            disruptive=True,
            after=tuple(removals),
            provider=DRIVER,
            expect=Expectation(current=dict.fromkeys(live.state)),
            description="delete the aggregate (no longer declared in Git)",
        )
    )
    return result
