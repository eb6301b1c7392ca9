"""Planning one Aggregate: an OpenStack Nova host aggregate, its zone, metadata and hosts.

Pure: the desired Aggregate and its live state in, a change, action drafts and diagnostics out.

Live state is flat (see aggregate_state). Facts (not compared) carry what the planner needs
to decide and order:

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
from dataclasses import dataclass
from typing import Any

from reconciler.model import (
    ChangeKind,
    Diagnostic,
    Expectation,
    LiveResource,
    Resource,
    Severity,
    is_of,
    typed,
)
from reconciler.model.hardware import ProvisioningState, ServerSpec
from reconciler.model.openstack import AggregateSpec, OnInstances
from reconciler.model.plan import ActionStatus
from reconciler.planners.aggregate_state import (
    AZ,
    DRIVER,
    HOSTS_PREFIX,
    MANAGED_KEY,
    METADATA_PREFIX,
    desired_hosts,
    desired_state,
    hostname,
    peers,
    zones_conflict,
)
from reconciler.planners.base import Draft, PlanContext, ResourcePlan, readable
from reconciler.planners.diff import diff_declared, removal
from reconciler.planners.provisioning import DEPLOY_KEY
from reconciler.planners.provisioning import STATE as PROVISIONING_STATE

# The planner and the Aggregate's vocabulary (defined in aggregate_state), which the openstack
# provider imports from here.
__all__ = [
    "AZ",
    "HOSTS_PREFIX",
    "MANAGED_KEY",
    "METADATA_PREFIX",
    "desired_hosts",
    "desired_state",
    "plan_aggregate",
]


def plan_aggregate(
    aggregate: Resource | None, live: LiveResource | None, ctx: PlanContext
) -> ResourcePlan:
    """Create an aggregate, set its zone and metadata, add and remove its hosts."""
    if aggregate is None:
        assert live is not None, "a deletion is planned only for a discovered aggregate"
        return _plan_delete(live)
    aggregate = typed(aggregate, AggregateSpec)
    result = ResourcePlan.noop(aggregate.address, aggregate.source)
    read = readable(result, aggregate, live, ctx, "the aggregate")
    if read is None:
        return result
    servers = {
        hostname(r): r
        for r in ctx.resources.values()
        if r.kind == "Server" and is_of(r, ServerSpec)
    }
    want, awaiting = _addable(aggregate, read, servers, ctx, result.diagnostics)
    held = read.state if read.exists else {}
    diff = diff_declared(
        want,
        held,
        whole=_declared_whole(aggregate),
        by_path=True,
        ignore=ctx.ignored(aggregate),
    )
    if not diff:
        return result
    creating = not read.exists
    result.record(ChangeKind.CREATE if creating else ChangeKind.UPDATE, diff.entries)
    changed = diff.changed
    result.drafts.extend(_settings_drafts(aggregate, held, changed, creating))
    hosts = _hosts(aggregate, read, ctx, servers, awaiting, result.drafts)
    for path, after in changed.items():
        if path.startswith(HOSTS_PREFIX):
            host = path.removeprefix(HOSTS_PREFIX)
            host_draft = _add_host if after else _remove_host
            result.drafts.append(host_draft(host, hosts, ctx, result.diagnostics))
    return result


def _hosts_field(aggregate: Resource[AggregateSpec]) -> tuple[str, ...]:
    """Where the aggregate declares its hosts, for diagnostics about them."""
    return ("spec", "hosts" if aggregate.spec.hosts is not None else "selector")


def _diagnostic(
    ctx: PlanContext,
    aggregate: Resource[AggregateSpec],
    severity: Severity,
    message: str,
    path: tuple[str, ...],
) -> Diagnostic:
    return ctx.diagnostic(aggregate, severity, message, path=path, field_name=".".join(path))


def _addable(
    aggregate: Resource[AggregateSpec],
    live: LiveResource,
    servers: Mapping[str, Resource[ServerSpec]],
    ctx: PlanContext,
    diags: list[Diagnostic],
) -> tuple[dict[str, Any], set[str]]:
    """The desired state less the hosts the cloud does not know, and the hosts to wait for.

    A host unknown to the cloud is an error, unless MAAS deploys its Server in this plan: its
    nova-compute registers once MAAS has deployed it, and its add waits for that.
    """
    want = desired_state(aggregate, ctx.resources)
    awaiting: set[str] = set()
    known = live.facts.get("computeHosts")
    if not isinstance(known, list):
        return want, awaiting
    for path in [p for p in want if p.startswith(HOSTS_PREFIX)]:
        host = path.removeprefix(HOSTS_PREFIX)
        if host in known:
            continue
        server = servers.get(host)
        if server is not None and _being_deployed(server, ctx):
            awaiting.add(host)
            continue
        want.pop(path)
        message = (
            f"host {host!r} is not a compute host of the cloud of "
            f"Provider/{aggregate.spec.provider}; it is not added"
        )
        diags.append(_diagnostic(ctx, aggregate, Severity.ERROR, message, _hosts_field(aggregate)))
    return want, awaiting


def _being_deployed(server: Resource[ServerSpec], ctx: PlanContext) -> bool:
    """The Server is to be Deployed by MAAS and is not yet (so Nova cannot know it yet)."""
    provisioning = server.spec.provisioning
    if provisioning is None or provisioning.state is not ProvisioningState.DEPLOYED:
        return False
    live = ctx.live.get(server.address)
    return (
        live is not None
        and live.reachable
        and live.state.get(PROVISIONING_STATE) not in (None, "Deployed")
    )


def _declared_whole(aggregate: Resource[AggregateSpec]) -> list[str]:
    """Declared mappings are compared whole: a key or host Git dropped goes."""
    spec = aggregate.spec
    whole = []
    if "metadata" in spec.model_fields_set:
        whole.append(METADATA_PREFIX)
    if spec.hosts is not None or spec.selector is not None:
        whole.append(HOSTS_PREFIX)
    return whole


def _settings_drafts(
    aggregate: Resource[AggregateSpec],
    held: Mapping[str, Any],
    changed: Mapping[str, Any],
    creating: bool,
) -> list[Draft]:
    """Create the aggregate or move its zone, then set its metadata."""
    zone: str | None = aggregate.spec.availability_zone
    drafts = []
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
    elif AZ in changed:
        members = [p for p in held if p.startswith(HOSTS_PREFIX)]
        drafts.append(
            Draft(
                key="zone",
                operation="aggregate.set_availability_zone",
                params={AZ: zone},
                # Its hosts' instances change zone with it.
                disruptive=bool(members),
                provider=DRIVER,
                expect=Expectation(current={AZ: zone}),
                description=f"move the aggregate from zone {held.get(AZ)} to {zone}",
            )
        )
    metadata = {
        p.removeprefix(METADATA_PREFIX): v
        for p, v in changed.items()
        if p.startswith(METADATA_PREFIX)
    }
    if metadata:
        drafts.append(
            Draft(
                key="metadata",
                operation="aggregate.set_metadata",
                params={"metadata": metadata},
                after=("create",) if creating else (),
                provider=DRIVER,
                expect=Expectation(current={METADATA_PREFIX + k: v for k, v in metadata.items()}),
                description="set metadata "
                + ", ".join(
                    f"{k}={v}" if v is not None else f"-{k}" for k, v in sorted(metadata.items())
                ),
            )
        )
    return drafts


@dataclass(frozen=True)
class _Hosts:
    """What a host's add or removal is checked and ordered against."""

    aggregate: Resource[AggregateSpec]
    before: tuple[str, ...]
    """The aggregate's own drafts a host's add waits for (its creation, its zone move)."""
    live_zone: str | None
    servers: Mapping[str, Resource[ServerSpec]]
    awaiting: set[str]
    elsewhere: Mapping[str, Mapping[str, str | None]]
    """For each host, the other aggregates that hold it now, and their zones."""
    peer_hosts: dict[str, set[str]]
    """For each other desired aggregate of the same cloud, the hosts it declares."""
    peer_managed: dict[str, bool]
    peer_zone: dict[str, str | None]
    instances: Mapping[str, int]


def _hosts(
    aggregate: Resource[AggregateSpec],
    live: LiveResource,
    ctx: PlanContext,
    servers: Mapping[str, Resource[ServerSpec]],
    awaiting: set[str],
    drafts: list[Draft],
) -> _Hosts:
    """Gather what the host drafts consult, once per aggregate."""
    others = peers(aggregate, ctx.resources)
    declared = {p.name: desired_hosts(p, ctx.resources) for p in others}
    return _Hosts(
        aggregate=aggregate,
        before=tuple(d.key for d in drafts if d.key in ("create", "zone")),
        live_zone=live.state.get(AZ) if live.exists else None,
        servers=servers,
        awaiting=awaiting,
        elsewhere=live.facts.get("elsewhere") or {},
        peer_hosts={name: set(hosts or ()) for name, hosts in declared.items()},
        peer_managed={name: hosts is not None for name, hosts in declared.items()},
        peer_zone={p.name: p.spec.availability_zone for p in others},
        instances=live.facts.get("instances") or {},
    )


def _add_host(host: str, hosts: _Hosts, ctx: PlanContext, diags: list[Diagnostic]) -> Draft:
    """Add a host after the aggregate exists, the host left a conflicting zone, MAAS deployed it.

    A host moving between two aggregates joins the target first, unless their zones conflict.
    """
    zone = hosts.aggregate.spec.availability_zone
    deps = list(hosts.before)
    for other, other_zone in sorted(hosts.elsewhere.get(host, {}).items()):
        if not zones_conflict(zone, other_zone):
            continue
        if (
            other in hosts.peer_hosts
            and hosts.peer_managed[other]
            and host not in hosts.peer_hosts[other]
        ):
            # Nova refuses one host in two zones: it leaves the other aggregate first.
            deps.append(f"Aggregate/{other}:remove:{host}")
        else:
            message = (
                f"host {host!r} cannot join zone {zone}: it stays in aggregate {other} "
                f"of zone {other_zone}, and Nova keeps a host in one zone"
            )
            diags.append(
                _diagnostic(
                    ctx, hosts.aggregate, Severity.ERROR, message, _hosts_field(hosts.aggregate)
                )
            )
    server = hosts.servers.get(host)
    if server is not None:
        # A host MAAS (re)deploys in this plan joins once it is deployed.
        deps.append(f"{server.address}:{DEPLOY_KEY}")
    waits = host in hosts.awaiting
    return Draft(
        key=f"add:{host}",
        operation="aggregate.add_host",
        params={"host": host, "awaitCompute": True} if waits else {"host": host},
        after=tuple(deps),
        provider=DRIVER,
        expect=Expectation(current={HOSTS_PREFIX + host: True}),
        description=f"add host {host}"
        + (" once MAAS has deployed it and its nova-compute has registered" if waits else ""),
    )


def _remove_host(host: str, hosts: _Hosts, ctx: PlanContext, diags: list[Diagnostic]) -> Draft:
    """Remove a host after it joined its target aggregate; refused while it runs instances."""
    deps = []
    for other in sorted(hosts.peer_hosts):
        if host not in hosts.peer_hosts[other] or other in hosts.elsewhere.get(host, {}):
            continue
        if not zones_conflict(hosts.peer_zone[other], hosts.live_zone):
            # Join the target first, so the host is never outside both aggregates.
            deps.append(f"Aggregate/{other}:add:{host}")
    count = hosts.instances.get(host)
    draft = _removal_draft(host, after=tuple(deps))
    spec = hosts.aggregate.spec
    if spec.on_instances is OnInstances.REFUSE and count != 0:
        draft.status, draft.reason = ActionStatus.REFUSED, _still_running(host, count)
        where = (
            ("spec", "onInstances")
            if "on_instances" in spec.model_fields_set
            else _hosts_field(hosts.aggregate)
        )
        message = (
            f"aggregate.remove_host refused: {draft.reason} (onInstances: Refuse; "
            "migrate them, or set onInstances: Allow)"
        )
        diags.append(_diagnostic(ctx, hosts.aggregate, Severity.WARNING, message, where))
    if count:
        draft.description += f" ({count} instances keep running)"
    return draft


def _removal_draft(host: str, after: tuple[str, ...] = ()) -> Draft:
    return Draft(
        key=f"remove:{host}",
        operation="aggregate.remove_host",
        params={"host": host},
        disruptive=True,
        after=after,
        provider=DRIVER,
        expect=Expectation(current={HOSTS_PREFIX + host: None}),
        description=f"remove host {host}",
    )


def _still_running(host: str, count: int | None) -> str:
    if count is None:
        return f"the instances of host {host} could not be counted"
    return f"host {host} still runs {count} instance{'' if count == 1 else 's'}"


def _plan_delete(live: LiveResource) -> ResourcePlan:
    """An aggregate Metalform created that Git no longer declares: empty it, then delete it.

    Its hosts leave first (Nova deletes only empty aggregates); a host that still runs
    instances is refused, as `onInstances: Refuse` (the default) would: empty the aggregate
    through Git first (`hosts: []` with `onInstances: Allow`), then drop it.
    """
    result = ResourcePlan.noop(live.address)
    if not live.reachable or not live.exists or not live.facts.get("managed"):
        return result
    result.record(ChangeKind.DELETE, removal(live.state))
    instances: Mapping[str, int] = live.facts.get("instances") or {}
    for path in sorted(p for p in live.state if p.startswith(HOSTS_PREFIX)):
        host = path.removeprefix(HOSTS_PREFIX)
        draft, count = _removal_draft(host), instances.get(host)
        if count != 0:
            draft.status, draft.reason = ActionStatus.REFUSED, _still_running(host, count)
            result.diagnostics.append(
                Diagnostic(
                    severity=Severity.WARNING,
                    address=live.address,
                    message=f"deleting the aggregate is refused: {draft.reason} (empty it through "
                    "Git first: hosts: [] with onInstances: Allow, then drop it)",
                )
            )
        result.drafts.append(draft)
    result.drafts.append(
        Draft(
            key="delete",
            operation="aggregate.delete",
            params={},
            disruptive=True,
            after=tuple(d.key for d in result.drafts),
            provider=DRIVER,
            expect=Expectation(current=dict.fromkeys(live.state)),
            description="delete the aggregate (no longer declared in Git)",
        )
    )
    return result
