"""The server's work: planning and applying exact commits on worker threads, recording all of
it in the store, keeping resource status and metrics current, reporting to forges.

Requests only create records and queue jobs (`request_plan`, `request_apply`); the jobs do
the Git, engine and forge I/O. A job never raises out: a bad commit or an unreachable system
becomes a failed plan or apply with its message, and an exception that escapes anyway (the
store failing) fails or interrupts its record from the worker's `on_crash`.

Each service names itself (`owner`) on the plans and applies it runs and holds the lock
`instance:<owner>` while it lives; `recover()` interrupts the records of processes that are
gone (see `metalform.store.recovery`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from metalform.server import resource_status
from metalform.server.applying import Applying
from metalform.server.control_base import (
    ApplyInProgress,
    ControlBase,
    DriftState,
    PlanNotApplicable,
)
from metalform.server.planning import Planning
from metalform.store import (
    ApplyRecord,
    PlanRecord,
    Trigger,
    recovery,
    retention,
)
from reconciler.errors import MetalformError
from reconciler.model.events import EventType

log = logging.getLogger("metalform.server")

__all__ = ["ApplyInProgress", "ControlBase", "ControlPlane", "DriftState", "PlanNotApplicable"]


class ControlPlane(Planning, Applying):
    """Everything behind the API: tracker, workers, store, engine, events, forge reporting."""

    # --- the tracked branch ------------------------------------------------------------

    def poll(self, who: str = "poll") -> PlanRecord | None:
        """Fetch; plan the tracked branch when its head moved since the last look (`who`:
        `startup` for the first look of the process, else `poll`). Not a drift check."""
        head = self.tracker.fetch()
        return self.plan_new_head(head, trigger=Trigger.POLL, who=who)

    def plan_new_head(
        self, head: str, *, trigger: Trigger, who: str | None, auto_apply: bool | None = None
    ) -> PlanRecord | None:
        """Plan `head` of the tracked branch unless it was planned already."""
        with self._head_lock:
            if head == self._last_head:
                return None
            self._last_head = head
        return self.request_plan(
            self.config.branch,
            sha=head,
            trigger=trigger,
            who=who,
            auto_apply=self.config.auto_apply if auto_apply is None else auto_apply,
        )

    def check_drift(self) -> PlanRecord:
        """Queue a plan of the tracked branch's head that reports drift."""
        return self.request_plan(
            self.config.branch, trigger=Trigger.DRIFT, who="drift", detect_drift=True
        )

    # --- retention ----------------------------------------------------------------------

    def prune(self, now: datetime | None = None) -> retention.Pruned:
        """Forget what the retention settings say is due; counts it in the metrics."""
        config = self.config
        pruned = retention.prune(
            self.store,
            now=now or datetime.now(UTC),
            max_age=(
                timedelta(seconds=config.retention_max_age)
                if config.retention_max_age is not None
                else None
            ),
            keep_per_repository=config.retention_keep,
        )
        for what in ("plans", "applies", "events", "deliveries"):
            self.metrics.pruned.labels(what).inc(getattr(pruned, what))
        if pruned:
            log.info(
                "retention pruned %d plan(s), %d apply(ies), %d event(s), %d delivery(ies)",
                pruned.plans,
                pruned.applies,
                pruned.events,
                pruned.deliveries,
            )
            self.changed()
        return pruned

    # --- crash recovery ---------------------------------------------------------------

    def recover(self) -> recovery.Recovered:
        """Interrupt plans and applies whose server process is gone (at start-up, and then
        now and then for replicas that died while this one runs)."""
        found = recovery.recover(self.store)
        self._interrupted(found.plans, found.applies)
        return found

    def _interrupted(
        self, plans: list[PlanRecord] | None = None, applies: list[ApplyRecord] | None = None
    ) -> None:
        for plan in plans or []:
            self.metrics.plans.labels("interrupted", plan.trigger.value).inc()
            self.bus.emit(
                EventType.PLAN_INTERRUPTED,
                {"error": plan.error},
                repository=plan.repository,
                plan_id=plan.id,
            )
        for applied in applies or []:
            self.metrics.applies.labels("interrupted").inc()
            full = self.store.get_apply(applied.id)
            if full.actions:
                # what it was acting on is no longer Progressing: its health is unknown now
                self.store.upsert_resource_statuses(
                    applied.repository, resource_status.after_apply(full.actions)
                )
            self.bus.emit(
                EventType.APPLY_INTERRUPTED,
                {"error": applied.error},
                repository=applied.repository,
                plan_id=applied.plan_id,
                apply_id=applied.id,
            )

    def _interrupt_own(self, reason: str) -> None:
        """At shutdown: what this process queued but will not run (or finish)."""
        found = recovery.interrupt_owned(self.store, self.owner, reason)
        self._interrupted(found.plans, found.applies)

    def close(self, timeout: float = 30.0) -> None:
        """Let running jobs finish (queued ones are dropped and, like any still running past
        `timeout`, recorded interrupted) and close the forge clients."""
        self.workers.shutdown(timeout)
        try:
            self._interrupt_own("interrupted: the server shut down before it finished")
        except MetalformError as exc:
            log.warning("could not record unfinished work as interrupted: %s", exc)
        finally:
            self._instance_lock.release()
        self.notifications.close(timeout)
        for client in self.reporter.clients.values():
            client.close()
