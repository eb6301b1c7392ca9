"""Drift control, pure: ignored fields, paused resources, accepted drift, excluded addresses.

The planners compare what Git declares less the ignored fields (`PlanContext.ignore`); this
module says which fields those are, and what a resource's plan becomes when it is paused or all
its drift is accepted. Time comes from the plan's `now`, never from a clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from fnmatch import fnmatchcase

from reconciler.bios import template_chain
from reconciler.model import Address, Diagnostic, LiveResource, Resource, Severity, is_of
from reconciler.model.base import IgnorableSpec, matches_any
from reconciler.model.hardware import ServerSpec
from reconciler.model.plan import Change, ChangeStatus
from reconciler.model.policy import AcceptedDrift, DriftResponse, PolicySpec
from reconciler.planners.base import PlanContext, ResourcePlan

Planner = Callable[[Resource | None, LiveResource | None, PlanContext], ResourcePlan]


ADDRESS_GLOB = re.compile(r"[A-Za-z*?]+/[a-z0-9.*?-]+")
"""An `--exclude` pattern: `Kind/name` with `*` and `?` (`Server/gpu-*`, `*/lab-?`)."""


def bad_address_globs(patterns: Iterable[str]) -> list[str]:
    """What is wrong with each `--exclude` pattern that is not an address glob."""
    return [
        f"--exclude {pattern!r} is not an address glob like Server/gpu-* "
        "(Kind/name with '*' and '?')"
        for pattern in patterns
        if not ADDRESS_GLOB.fullmatch(pattern)
    ]


def excluded(address: Address, patterns: Collection[str]) -> bool:
    """Whether `--exclude` globs (`Server/gpu-*`) name `address`."""
    return any(fnmatchcase(address, pattern) for pattern in patterns)


def ignore_map(
    resources: Mapping[Address, Resource], *, refresh_only: bool
) -> dict[Address, tuple[str, ...]]:
    """Each resource's ignored field globs, with those of the BiosTemplates a Server uses.

    A refresh-only plan reads and shows every field, ignored or not: the map is empty.
    """
    if refresh_only:
        return {}
    found: dict[Address, tuple[str, ...]] = {}
    for address, resource in resources.items():
        globs = list(resource.spec.ignore) if is_of(resource, IgnorableSpec) else []
        if is_of(resource, ServerSpec) and resource.spec.bios and resource.spec.bios.template:
            for template in template_chain(resource.spec.bios.template, resources):
                globs.extend(template.spec.ignore)
        if globs:
            found[address] = tuple(dict.fromkeys(globs))
    return found


@dataclass(frozen=True)
class Acceptance:
    policy: Resource[PolicySpec]
    index: int
    rule: AcceptedDrift

    def describe(self) -> str:
        until = self.rule.until.isoformat()
        return f"accepted until {until} by Policy/{self.policy.name}: {self.rule.reason}"


def acceptances(policies: Sequence[Resource[PolicySpec]], resource: Resource) -> list[Acceptance]:
    """The acceptedDrift rules of every Policy whose `match` covers `resource`."""
    return [
        Acceptance(policy, i, rule)
        for policy in policies
        for i, rule in enumerate(policy.spec.accepted_drift)
        if rule.match is None or rule.match.matches(resource.kind, resource.metadata.labels)
    ]


def control(
    planner: Planner,
    resource: Resource,
    live: LiveResource | None,
    ctx: PlanContext,
    policies: Sequence[Resource[PolicySpec]],
) -> ResourcePlan:
    """Plan `resource`, then apply pause and accepted drift to what the planner found."""
    result = planner(resource, live, ctx)
    if not result.reachable:
        return result
    reason = resource.paused
    if reason is not None:
        result.drafts = []
        result.change = _marked(result.change, ChangeStatus.SUSPENDED, f"paused: {reason}")
        return result
    reported = reported_paths(policies, resource, result.change)
    if reported:
        why = f"report only: {', '.join(reported)} (never applied automatically)"
        result.change = result.change.model_copy(update={"reason": why})
    rules = acceptances(policies, resource)
    drift = [entry.path for entry in result.change.diff]
    if not rules or not drift:
        return result
    active = [a for a in rules if ctx.now < a.rule.expires]
    expired = [a for a in rules if ctx.now >= a.rule.expires]
    covering = [a for a in active if any(matches_any(p, a.rule.fields) for p in drift)]
    lapsed = [a for a in expired if any(matches_any(p, a.rule.fields) for p in drift)]
    if lapsed and not covering:
        why = "; ".join(f"{a.describe()} (expired)" for a in lapsed)
        result.change = result.change.model_copy(update={"reason": why})
    if not covering:
        return result
    fields = [f for a in covering for f in a.rule.fields]
    why = "; ".join(a.describe() for a in covering)
    if all(matches_any(p, fields) for p in drift):
        result.drafts = []
        result.change = _marked(result.change, ChangeStatus.ACCEPTED, why)
        return result
    # Some drift is accepted: plan again without it, show all of it, say which is accepted.
    narrowed = replace(
        ctx, ignore={**ctx.ignore, resource.address: (*ctx.ignored(resource), *fields)}
    )
    again = planner(resource, live, narrowed)
    accepted = ", ".join(p for p in drift if matches_any(p, fields))
    result.drafts = again.drafts
    result.diagnostics = again.diagnostics
    result.change = result.change.model_copy(update={"reason": f"{accepted} {why}"})
    return result


def _marked(change: Change, status: ChangeStatus, reason: str) -> Change:
    return change.model_copy(update={"status": status, "reason": reason})


def expired_acceptances(
    policies: Iterable[Resource[PolicySpec]],
    now: datetime,
    locate: Callable[[Address, Sequence[str | int]], object],
) -> list[Diagnostic]:
    """A warning for each acceptedDrift rule whose `until` has passed: its drift is planned."""
    found = []
    for policy in policies:
        for i, rule in enumerate(policy.spec.accepted_drift):
            if now < rule.expires:
                continue
            location = locate(policy.address, ("spec", "acceptedDrift", i, "until"))
            found.append(
                Diagnostic(
                    severity=Severity.WARNING,
                    address=policy.address,
                    field=f"spec.acceptedDrift[{i}].until",
                    location=location if location is not None else policy.location,
                    message=(
                        f"the acceptance of {', '.join(rule.fields)} expired on "
                        f"{rule.until.isoformat()} ({rule.reason}); that drift is planned again"
                    ),
                )
            )
    return found


def reported_paths(
    policies: Sequence[Resource[PolicySpec]], resource: Resource, change: Change
) -> list[str]:
    """The drifted paths of `change` that a `driftActions` rule says to report, not fix.

    A later rule wins over an earlier one for the same path (remediate can narrow a report).
    """
    rules = [
        rule
        for policy in policies
        for rule in policy.spec.drift_actions
        if rule.match is None or rule.match.matches(resource.kind, resource.metadata.labels)
    ]
    paths = []
    for entry in change.diff:
        decided = [r.action for r in rules if matches_any(entry.path, r.fields)]
        if decided and decided[-1] is DriftResponse.REPORT:
            paths.append(entry.path)
    return paths


def report_only(
    policies: Sequence[Resource[PolicySpec]],
    resources: Mapping[Address, Resource],
    changes: Iterable[Change],
) -> dict[Address, list[str]]:
    """Each drifted resource with report-only drift, and those paths: the server's drift loop
    notifies about them and never applies them on its own."""
    found: dict[Address, list[str]] = {}
    for change in changes:
        resource = resources.get(change.address)
        if resource is None or not change.drifted:
            continue
        paths = reported_paths(policies, resource, change)
        if paths:
            found[change.address] = paths
    return found
