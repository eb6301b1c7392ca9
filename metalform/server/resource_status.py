"""Per-resource sync and health, derived from a plan of the tracked branch or from an apply.

Sync: `OutOfSync` when the plan found a difference, `Synced` when it found none, `Unknown`
when the live state could not be read. Health: the live reading's (`Unreachable` when the BMC
or API did not answer: never mistaken for drift). Kinds without a live counterpart
(credentials, templates, policies) are `Synced` and `Healthy` as long as Git holds them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from metalform.store import ActionResult as StoredAction
from metalform.store import ResourceStatusUpdate
from reconciler.engine import PlanRun
from reconciler.model import ActionStatus, ChangeKind, Health, SyncStatus
from reconciler.plan import managed


def after_plan(run: PlanRun) -> list[ResourceStatusUpdate]:
    """The status of every resource of the desired state, as this plan saw it."""
    plan = run.plan
    changes = {c.address: c for c in plan.changes}
    live_kinds = {r.address for r in managed(run.desired)}
    updates = []
    for address, resource in sorted(run.desired.resources.items()):
        labels = dict(resource.metadata.labels)
        if address not in live_kinds:
            updates.append(
                ResourceStatusUpdate(
                    address=address,
                    labels=labels,
                    sync=SyncStatus.SYNCED,
                    health=Health.HEALTHY,
                    message="",
                )
            )
            continue
        live = run.gathered.live.get(address)
        if live is None:
            updates.append(
                ResourceStatusUpdate(
                    address=address,
                    labels=labels,
                    sync=SyncStatus.UNKNOWN,
                    health=Health.UNKNOWN,
                    message="not read",
                )
            )
            continue
        if not live.reachable:
            updates.append(
                ResourceStatusUpdate(
                    address=address,
                    labels=labels,
                    sync=SyncStatus.UNKNOWN,
                    health=Health.UNREACHABLE,
                    message=live.error or "did not answer",
                )
            )
            continue
        change = changes.get(address)
        drifted = change is not None and change.action is not ChangeKind.NOOP
        message = ""
        if drifted and change is not None:
            message = f"{change.action.value}: {len(change.diff)} field(s) differ"
        if change is not None and change.status is not None:
            message = f"{change.status.value}: {change.reason}"
        sync = SyncStatus.OUT_OF_SYNC if drifted else SyncStatus.SYNCED
        if resource.paused is not None:
            sync = SyncStatus.SUSPENDED  # read and shown, never acted on
        updates.append(
            ResourceStatusUpdate(
                address=address,
                labels=labels,
                sync=sync,
                health=live.health,
                message=message,
            )
        )
    return updates


def drifted(run: PlanRun) -> list[str]:
    """Addresses whose live state differs from Git, by address."""
    return sorted(c.address for c in run.plan.changes if c.drifted)


def progressing(addresses: Iterable[str]) -> list[ResourceStatusUpdate]:
    """Resources an apply is about to touch: `Progressing` until it is done with them."""
    return [
        ResourceStatusUpdate(address=a, health=Health.PROGRESSING, message="being applied")
        for a in sorted(set(addresses))
    ]


def after_apply(
    actions: Iterable[StoredAction], before: Mapping[str, Health] | None = None
) -> list[ResourceStatusUpdate]:
    """Resources whose actions all succeeded are in sync; any other outcome leaves drift.
    A resource none of whose actions failed gets back the health it had `before` the apply
    (it was `Progressing` while the apply ran); an interrupted one's health is unknown."""
    before = before or {}
    by_address: dict[str, list[ActionStatus]] = defaultdict(list)
    for action in actions:
        by_address[action.address].append(action.status)
    updates = []
    for address, statuses in sorted(by_address.items()):
        if all(s is ActionStatus.SUCCEEDED for s in statuses):
            updates.append(
                ResourceStatusUpdate(
                    address=address, sync=SyncStatus.SYNCED, health=Health.HEALTHY, message=""
                )
            )
        elif ActionStatus.FAILED in statuses:
            updates.append(
                ResourceStatusUpdate(
                    address=address,
                    sync=SyncStatus.OUT_OF_SYNC,
                    health=Health.DEGRADED,
                    message="an action failed",
                )
            )
        else:
            left = sum(1 for s in statuses if s is not ActionStatus.SUCCEEDED)
            interrupted = ActionStatus.INTERRUPTED in statuses
            updates.append(
                ResourceStatusUpdate(
                    address=address,
                    sync=SyncStatus.OUT_OF_SYNC,
                    health=Health.UNKNOWN if interrupted else before.get(address, Health.UNKNOWN),
                    message="the apply was interrupted"
                    if interrupted
                    else f"{left} action(s) not run",
                )
            )
    return updates
