"""The planner: desired + live state -> an ordered, reviewable Plan. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reconciler.checks import check_providers
from reconciler.drift import control, excluded, expired_acceptances, ignore_map
from reconciler.graph import phase
from reconciler.load import DesiredState, resources_from_documents
from reconciler.model import (
    Action,
    ActionStatus,
    Address,
    Change,
    ChangeKind,
    Diagnostic,
    LiveResource,
    Plan,
    Resource,
    Severity,
)
from reconciler.model.plan import ChangeStatus, PlanSource, Summary
from reconciler.model.policy import PolicySpec
from reconciler.planners import PLANNERS, Draft, PlanContext, ResourcePlan
from reconciler.policy import enforce
from reconciler.references import references
from reconciler.rollout import failure_budget, wave_count


@dataclass(frozen=True)
class PlanOptions:
    now: datetime
    targets: frozenset[Address] = frozenset()
    exclude: frozenset[str] = frozenset()
    """Address globs left out of the plan (`--exclude`), the inverse of `targets`."""
    refresh_only: bool = False
    source: PlanSource | None = None
    operations: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """Operations each installed driver supports (`redfish` -> {`bios.set`, ...})."""
    endpoints: Mapping[Address, str] = field(default_factory=dict)
    files: Callable[[str], str] | None = None
    """Reads a file of the planned revision (cloud-init templates), by repository path."""
    set_unknown_passwords: bool = False
    """Also set the password of declared BMC accounts whose password cannot be told (an
    account made by hand): `--set-unknown-passwords`."""


def managed(
    desired: DesiredState, targets: Collection[Address] = (), exclude: Collection[str] = ()
) -> list[Resource]:
    """The resources with a live counterpart that this plan covers (all, or the targets),
    less the excluded ones."""
    chosen = [r for r in desired.resources.values() if r.kind in PLANNERS]
    if targets:
        chosen = [r for r in chosen if r.address in targets]
    if exclude:
        chosen = [r for r in chosen if not excluded(r.address, exclude)]
    return chosen


def unknown_targets(desired: DesiredState, targets: Collection[Address]) -> list[Address]:
    return sorted(t for t in targets if t not in desired.resources)


def _closure(address: Address, resources: Mapping[Address, Resource]) -> set[Address]:
    """A resource and everything it refers to, transitively."""
    seen: set[Address] = set()
    stack = [address]
    while stack:
        current = stack.pop()
        if current in seen or current not in resources:
            continue
        seen.add(current)
        stack.extend(target for _, target in references(resources[current]))
    return seen


REGISTRY_FROM_CACHE = "biosRegistryFromCache"
"""Live fact a provider sets when a Server's attribute registry came from its on-disk cache."""


def _cached_registries(live: Mapping[Address, LiveResource]) -> list[Diagnostic]:
    """One line per attribute registry read from a provider's cache instead of the BMCs."""
    counts: dict[str, int] = {}
    for item in live.values():
        name = item.facts.get(REGISTRY_FROM_CACHE)
        if isinstance(name, str):
            counts[name] = counts.get(name, 0) + 1
    return [
        Diagnostic(
            severity=Severity.INFO,
            message=f"BIOS attribute registry {name} ({n} server(s)) came from the on-disk "
            "cache, not from the BMCs",
        )
        for name, n in sorted(counts.items())
    ]


def make_plan(
    desired: DesiredState,
    live: Mapping[Address, LiveResource],
    options: PlanOptions,
    discovered: Mapping[Address, LiveResource] | None = None,
) -> Plan:
    """Plan every managed resource, and the deletion of `discovered` objects Git dropped."""
    resources = desired.resources
    diagnostics: list[Diagnostic] = list(desired.warnings)
    for missing in unknown_targets(desired, options.targets):
        diagnostics.append(
            Diagnostic(
                severity=Severity.ERROR,
                address=missing,
                message="--target names no resource of the desired state",
            )
        )
    for pattern in sorted(options.exclude):
        if not any(excluded(address, (pattern,)) for address in resources):
            diagnostics.append(
                Diagnostic(
                    severity=Severity.WARNING,
                    message=f"--exclude {pattern} names no resource of the desired state",
                )
            )
    planned, deleted_documents = _plan_resources(desired, live, options, discovered or {})
    changes = [p.change for p in planned if p.reachable]
    unreachable = sum(1 for p in planned if not p.reachable)
    for p in planned:
        diagnostics.extend(p.diagnostics)
    actions = [] if options.refresh_only else _number(planned, options.endpoints)
    policies = desired.of_kind("Policy", PolicySpec)
    diagnostics.extend(expired_acceptances(policies, options.now, desired.locate))
    actions, policy_diags = enforce(policies, resources, changes, actions, options.now)
    diagnostics.extend(policy_diags)
    diagnostics.extend(_cached_registries(live))
    touched = {a.address for a in actions}
    observed = {**(discovered or {}), **live}
    return Plan(
        revision=desired.revision,
        created_at=options.now.isoformat(timespec="seconds"),
        source=options.source,
        changes=changes,
        actions=actions,
        summary=_summary(changes, actions, unreachable),
        diagnostics=diagnostics,
        live_fingerprints={
            address: observed[address].fingerprint()
            for address in sorted(touched)
            if address in observed
        },
        resources=_documents(touched, resources, deleted_documents),
        targets=sorted(options.targets),
        refresh_only=options.refresh_only,
        failure_budget=failure_budget(policies, actions),
    )


def _plan_resources(
    desired: DesiredState,
    live: Mapping[Address, LiveResource],
    options: PlanOptions,
    discovered: Mapping[Address, LiveResource],
) -> tuple[list[ResourcePlan], dict[Address, dict[str, Any]]]:
    """Each managed resource's plan, then each deletion; and the deleted resources' documents."""
    resources = desired.resources
    ctx = PlanContext(
        resources=resources,
        locate=desired.locate,
        operations=options.operations,
        now=options.now,
        files=options.files,
        live=live,
        ignore=ignore_map(resources, refresh_only=options.refresh_only),
        set_unknown_passwords=options.set_unknown_passwords,
    )
    policies = desired.of_kind("Policy", PolicySpec)
    planned: list[ResourcePlan] = []
    chosen = managed(desired, options.targets, options.exclude)
    for resource in sorted(chosen, key=lambda r: r.address):
        planner = PLANNERS[resource.kind]
        planned.append(control(planner, resource, live.get(resource.address), ctx, policies))
    deleted_documents: dict[Address, dict[str, Any]] = {}
    for address, gone in sorted(discovered.items()):
        kind = address.split("/", 1)[0]
        if address in resources or kind not in PLANNERS:
            continue
        if options.targets and address not in options.targets:
            continue
        if excluded(address, options.exclude):
            continue
        planned.append(PLANNERS[kind](None, gone, ctx))
        document = gone.facts.get("document")
        if isinstance(document, dict):
            deleted_documents[address] = document
    return planned, deleted_documents


def _documents(
    touched: set[Address],
    resources: Mapping[Address, Resource],
    deleted_documents: Mapping[Address, dict[str, Any]],
) -> dict[Address, dict[str, Any]]:
    """The documents apply needs: each acted-on resource and all it refers to, transitively."""
    kept: set[Address] = set()
    for address in touched:
        if address in deleted_documents:
            # What a deleted resource referred to (its Provider) is still needed to act on it.
            dropped = resources_from_documents({address: deleted_documents[address]})[address]
            for _, target in references(dropped):
                kept |= _closure(target, resources)
        else:
            kept |= _closure(address, resources)
            if address in resources:  # the clouds its health checks ask (novaCompute)
                for provider in check_providers(resources[address], resources):
                    kept |= _closure(provider, resources)
    return {
        **{a: resources[a].document() for a in sorted(kept) if a in resources},
        **{a: d for a, d in deleted_documents.items() if a in touched},
    }


def _number(planned: list[ResourcePlan], endpoints: Mapping[Address, str]) -> list[Action]:
    """Give drafts plan-wide ids in execution order: by phase, then by address."""
    entries: list[tuple[int, Address, int, Draft]] = []
    for p in planned:
        for index, draft in enumerate(p.drafts):
            entries.append((phase(draft.operation), p.address, index, draft))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    ids: dict[tuple[Address, str], int] = {}
    for n, (_, address, _, draft) in enumerate(entries, start=1):
        ids[(address, draft.key)] = n
    actions = []
    for n, (_, address, _, draft) in enumerate(entries, start=1):
        actions.append(
            Action(
                id=n,
                address=address,
                operation=draft.operation,
                params=draft.params,
                depends_on=_dependencies(address, draft.after, ids),
                disruptive=draft.disruptive,
                status=draft.status,
                reason=draft.reason,
                endpoint=endpoints.get(address, ""),
                provider=draft.provider,
                expect=draft.expect,
                description=draft.description,
            )
        )
    return actions


def _dependencies(
    address: Address, after: tuple[str, ...], ids: Mapping[tuple[Address, str], int]
) -> tuple[int, ...]:
    """Ids of the drafts an action waits for.

    An entry is a key of the same resource's drafts, or `Kind/name:key` for a draft of another
    resource (a host joins its new aggregate before it leaves the old one). A draft of another
    resource that this plan does not hold (--target, unreachable) adds no dependency.
    """
    found: set[int] = set()
    for key in after:
        if (address, key) in ids:
            found.add(ids[(address, key)])
            continue
        other, sep, rest = key.partition(":")
        if sep and "/" in other:
            if (other, rest) in ids:
                found.add(ids[(other, rest)])
            continue
        found.add(ids[(address, key)])  # an unknown key of this resource is a planner bug
    return tuple(sorted(found))


def _summary(changes: list[Change], actions: list[Action], unreachable: int) -> Summary:
    counts = {kind: 0 for kind in ChangeKind}
    held = {status: 0 for status in ChangeStatus}
    for change in changes:
        if change.status is None:
            counts[change.action] += 1
        else:
            held[change.status] += 1
    return Summary(
        create=counts[ChangeKind.CREATE],
        update=counts[ChangeKind.UPDATE],
        delete=counts[ChangeKind.DELETE],
        noop=counts[ChangeKind.NOOP],
        deferred=sum(1 for a in actions if a.status is ActionStatus.DEFERRED),
        refused=sum(1 for a in actions if a.status is ActionStatus.REFUSED),
        unreachable=unreachable,
        accepted=held[ChangeStatus.ACCEPTED],
        suspended=held[ChangeStatus.SUSPENDED],
        waves=wave_count(actions),
    )
