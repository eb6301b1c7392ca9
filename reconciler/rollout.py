"""Rollouts: waves bounded by the blast radius of each group, and the failure budget.

`maxDisruptedPerGroup` bounds how many servers of one group are disrupted at once. A change
larger than that is not cut short: it is split into waves, and apply starts a wave only when
every action of the previous one is done (a reboot is done when the server is back and shows
the planned state). A resource's actions all belong to its wave; an action never runs in an
earlier wave than an action it depends on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.model import Action, ActionStatus, Address, Resource
from reconciler.model.plan import FailureBudget
from reconciler.model.policy import DisruptionBudget, PolicySpec, resolve_count


@dataclass(frozen=True)
class _Bound:
    """One Policy's limit on one group: how many of its members may be disrupted at once."""

    key: tuple[int, str]
    limit: int


def _group_limit(budget: DisruptionBudget, members: int) -> int:
    if isinstance(budget.max, int):
        return budget.max
    return max(1, math.floor(members * int(budget.max[:-1]) / 100))


def _bounds(
    policies: Sequence[Resource[PolicySpec]], resources: Mapping[Address, Resource]
) -> dict[Address, list[_Bound]]:
    """Each server's group limits, one per Policy with `maxDisruptedPerGroup` that groups it."""
    out: dict[Address, list[_Bound]] = defaultdict(list)
    for index, policy in enumerate(policies):
        budget = policy.spec.max_disrupted_per_group
        if budget is None:
            continue
        label = budget.group_by
        groups: dict[str, list[Address]] = defaultdict(list)
        for resource in resources.values():
            if resource.kind == "Server" and label in resource.metadata.labels:
                groups[resource.metadata.labels[label]].append(resource.address)
        for group, members in groups.items():
            bound = _Bound((index, group), _group_limit(budget, len(members)))
            for address in members:
                out[address].append(bound)
    return out


def assign_waves(
    policies: Sequence[Resource[PolicySpec]],
    resources: Mapping[Address, Resource],
    actions: list[Action],
) -> list[Action]:
    """Number the waves: first-fit of each disrupted resource into the first wave with room."""
    bounds = _bounds(policies, resources)
    canaries = [p.spec.rollout.canary for p in policies if p.spec.rollout and p.spec.rollout.canary]
    canary = min(canaries, default=None)
    in_first = 0
    used: dict[tuple[tuple[int, str], int], int] = defaultdict(int)
    resource_wave: dict[Address, int] = {}
    for action in actions:
        address = action.address
        if (
            not action.disruptive
            or action.status is not ActionStatus.PLANNED
            or address in resource_wave
        ):
            continue
        mine = bounds.get(address, [])
        # With a canary, the first wave takes only that many resources: the rest wait for
        # their health checks to pass.
        wave = 2 if canary is not None and in_first >= canary else 1
        while any(used[(b.key, wave)] >= b.limit for b in mine):
            wave += 1
        in_first += wave == 1
        for b in mine:
            used[(b.key, wave)] += 1
        resource_wave[address] = wave
    return _with_dependencies(actions, resource_wave)


def _with_dependencies(actions: list[Action], resource_wave: Mapping[Address, int]) -> list[Action]:
    """Each action in its resource's wave, and never before an action it depends on."""
    by_id = {a.id: a for a in actions}
    wave: dict[int, int] = {}

    def wave_of(action_id: int, seen: frozenset[int] = frozenset()) -> int:
        if action_id in wave:
            return wave[action_id]
        action = by_id[action_id]
        own = resource_wave.get(action.address, 1)
        deps = [d for d in action.depends_on if d in by_id and d not in seen]
        value = max([own, *(wave_of(d, seen | {action_id}) for d in deps)])
        wave[action_id] = value
        return value

    return [
        a if wave_of(a.id) == a.wave else a.model_copy(update={"wave": wave_of(a.id)})
        for a in actions
    ]


def wave_count(actions: Sequence[Action]) -> int:
    """How many waves the runnable actions take."""
    return max((a.wave for a in actions if a.status is ActionStatus.PLANNED), default=0)


def failure_budget(
    policies: Sequence[Resource[PolicySpec]], actions: Sequence[Action]
) -> FailureBudget | None:
    """The strictest `rollout.maxFailures` of the policies, in resources, for this plan."""
    changed = len({a.address for a in actions if a.status is ActionStatus.PLANNED})
    best: FailureBudget | None = None
    for policy in policies:
        rollout = policy.spec.rollout
        if rollout is None:
            continue
        limit = rollout.max_failures
        if limit is None:
            continue
        budget = FailureBudget(
            max_failures=resolve_count(limit, changed),
            policy=policy.address,
            limit=str(limit),
            resources=changed,
        )
        if best is None or budget.max_failures < best.max_failures:
            best = budget
    return best
