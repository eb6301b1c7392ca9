"""Crash recovery: plans and applies whose server process is gone become `interrupted`.

Who owns a pending or running record decides whether it may be touched; several replicas may
share one PostgreSQL, and a replica starting must never interrupt another's live work:

- An apply is created only while its server holds the repository's apply lock, and that lock
  is released only after the apply is recorded finished. So while the lock can be taken, no
  live process runs any pending or running apply of that repository: each is interrupted,
  under the lock, so no new apply can start in between.
- A plan records its `owner`, the server process that runs it, and each server holds the lock
  `instance:<owner>` for as long as it runs. A pending or running plan whose owner's lock can
  be taken has no live runner. A plan without an owner (recorded by an older version) has no
  runner that could ever finish it.

A dead process cannot hold a lock for long: PostgreSQL frees advisory locks when the
connection of the holder ends, which happens when its process dies; on SQLite, a holder of
this host whose process is gone is dead at once and any other once its lease runs out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from metalform.store.locks import Holder
from metalform.store.records import ApplyRecord, PlanRecord
from metalform.store.store import Store

log = logging.getLogger(__name__)


def instance_lock_name(owner: str) -> str:
    """The lock a server process holds while it runs (its plans name it as their owner)."""
    return f"instance:{owner}"


def runner(owner: str | None) -> str:
    """Who ran a record, for messages: `host:pid`, or a phrase when unknown."""
    holder = Holder.parse(owner) if owner else None
    return f"the server process {holder.label}" if holder else "its server process"


@dataclass
class Recovered:
    """What one recovery pass interrupted."""

    plans: list[PlanRecord] = field(default_factory=list)
    applies: list[ApplyRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.plans or self.applies)


def interrupt_plan(store: Store, plan_id: str, reason: str) -> PlanRecord | None:
    """Mark a pending or running plan `interrupted` with `reason`; appends `plan.interrupted`.
    None when it ended meanwhile."""
    return store.interrupt_plan(plan_id, reason)


def interrupt_apply(store: Store, apply_id: str, reason: str) -> ApplyRecord | None:
    """Mark a pending or running apply and its unfinished actions `interrupted`; appends
    `apply.interrupted` (the last event of its stream). None when it ended meanwhile.

    The caller must hold the repository's apply lock, or know its runner is gone."""
    return store.interrupt_apply(apply_id, reason)


def recover_applies(store: Store) -> list[ApplyRecord]:
    """Interrupt the pending and running applies whose repository's apply lock is free."""
    done: list[ApplyRecord] = []
    for repository in sorted({r for _, r in store.unfinished_applies()}):
        lock = store.try_apply_lock(repository)
        if lock is None:
            continue  # a live process holds it: its applies are its own business
        try:
            # listed again under the lock: only now is the set final
            for apply_id, _ in store.unfinished_applies(repository):
                owner = store.get_apply(apply_id).owner
                reason = (
                    f"interrupted: {runner(owner)} stopped before the apply finished; "
                    "plan again to see what is left"
                )
                record = interrupt_apply(store, apply_id, reason)
                if record is not None:
                    log.warning("apply %s: %s", apply_id, reason)
                    done.append(record)
        finally:
            lock.release()
    return done


def recover_plans(store: Store) -> list[PlanRecord]:
    """Interrupt the pending and running plans whose owner no longer runs."""
    by_owner: dict[str | None, list[str]] = {}
    for plan_id, owner in store.unfinished_plans():
        by_owner.setdefault(owner, []).append(plan_id)
    done: list[PlanRecord] = []
    for owner, plan_ids in by_owner.items():
        lock = store.try_lock(instance_lock_name(owner)) if owner is not None else None
        if owner is not None and lock is None:
            continue  # its server runs: the plan is queued or running there
        try:
            done += _interrupt_plans(store, plan_ids, owner)
        finally:
            if lock is not None:
                lock.release()
    return done


def _interrupt_plans(store: Store, plan_ids: Iterable[str], owner: str | None) -> list[PlanRecord]:
    reason = f"interrupted: {runner(owner)} stopped before the plan finished; plan again"
    done = []
    for plan_id in plan_ids:
        record = interrupt_plan(store, plan_id, reason)
        if record is not None:
            log.warning("plan %s: %s", plan_id, reason)
            done.append(record)
    return done


def interrupt_owned(store: Store, owner: str, reason: str) -> Recovered:
    """Interrupt every pending or running plan and apply of `owner` (a server stopping)."""
    found = Recovered()
    for plan_id, plan_owner in store.unfinished_plans():
        if plan_owner == owner and (plan := interrupt_plan(store, plan_id, reason)):
            found.plans.append(plan)
    for apply_id, _ in store.unfinished_applies():
        if store.get_apply(apply_id).owner == owner and (
            applied := interrupt_apply(store, apply_id, reason)
        ):
            found.applies.append(applied)
    return found


def recover(store: Store) -> Recovered:
    """One recovery pass over the whole store (at start-up, then now and then)."""
    return Recovered(plans=recover_plans(store), applies=recover_applies(store))
