"""Apply jobs of the ControlPlane: check, lock, execute exactly the plan, record, report."""

from __future__ import annotations

import logging
import time
from typing import Any

from metalform.notify.payloads import (
    apply_finished_payload,
    apply_started_payload,
    result_entry,
)
from metalform.notify.rotations import rotations
from metalform.server import resource_status
from metalform.server.control_base import ApplyInProgress, ControlBase, PlanNotApplicable
from metalform.server.reporting import PullRequest
from metalform.store import (
    ApplyRecord,
    Lock,
    PlanRecord,
    RunStatus,
    Trigger,
    recovery,
)
from reconciler.apply import ActionResult as EngineActionResult
from reconciler.errors import MetalformError, StalePlanError
from reconciler.model import Action, ActionStatus, Health, Plan
from reconciler.model.events import EventType
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.server")


class Applying(ControlBase):
    """Checks, requests and runs applies."""

    def check_applicable(self, record: PlanRecord) -> Plan:
        """Refuse (409) a plan that is not succeeded, has errors or is stale against Git."""
        if record.status is not RunStatus.SUCCEEDED:
            raise PlanNotApplicable(
                f"plan {record.id} is {record.status.value}; only a succeeded plan can be applied"
            )
        plan = record.plan()
        assert plan is not None
        if plan.has_errors:
            raise PlanNotApplicable(
                f"plan {record.id} has errors (see its diagnostics); fix them and plan again"
            )
        if record.pull_request is not None:
            latest = self.store.list_plans(pull_request=record.pull_request, limit=1).items
            if latest and latest[0].id != record.id:
                raise StalePlanError(
                    why=f"{record.pull_request} was planned again since (plan {latest[0].id})"
                )
            return plan
        branch = self.tracker.branch_of(record.ref)
        if branch is not None:
            head = self.tracker.resolve(branch)
            if head != plan.revision:
                raise StalePlanError(
                    why=f"{branch} is now at {head}, the plan was made at "
                    f"{plan.revision}; plan again"
                )
        return plan

    def request_apply(
        self,
        plan_id: str,
        *,
        trigger: Trigger = Trigger.API,
        who: str | None = None,
        pull_request: PullRequest | None = None,
    ) -> ApplyRecord:
        """Check the plan, take the repository's apply lock and queue the apply.

        Raises `ApplyInProgress` (409) while another apply runs, `StalePlanError` (409) when
        Git moved on; a live-state change is found by the apply itself (it fails, stale)."""
        record = self.store.get_plan(plan_id)
        plan = self.check_applicable(record)
        lock = self.store.try_apply_lock(record.repository)
        if lock is None:
            raise ApplyInProgress(repository=record.repository)
        try:
            applied = self.store.create_apply(record.id, trigger=trigger, who=who, owner=self.owner)
        except BaseException:
            lock.release()
            raise
        try:
            self.workers.submit(
                f"apply {applied.id}",
                self.run_apply,
                applied.id,
                record,
                plan,
                lock,
                pull_request,
                on_crash=lambda exc: self._apply_crashed(applied.id, exc),
            )
        except BaseException:
            try:
                recovery.interrupt_apply(
                    self.store, applied.id, "interrupted: the server shut down before it ran"
                )
            finally:
                lock.release()
            raise
        return applied

    def _apply_crashed(self, apply_id: str, exc: BaseException) -> None:
        """An exception escaped the apply job (its lock is released by then): an apply left
        open is interrupted, so its stream ends and a new apply may start."""
        reason = (
            f"interrupted: internal error: {type(exc).__name__}; plan again to see what is left"
        )
        record = recovery.interrupt_apply(self.store, apply_id, reason)
        if record is not None:
            self._interrupted(applies=[record])

    def _listener(self, apply_id: str) -> Any:
        def record(action: Action, result: EngineActionResult) -> None:
            status = result.status
            try:
                self.store.record_action(apply_id, action.id, status, error=result.error)
            except MetalformError:
                log.warning(
                    "apply %s: could not record action %s", apply_id, action.id, exc_info=True
                )
            if status.terminal:
                self.metrics.actions.labels(action.operation, status.value).inc()
                if result.seconds:
                    self.metrics.action_seconds.labels(action.operation).observe(result.seconds)

        return record

    def run_apply(
        self,
        apply_id: str,
        record: PlanRecord,
        plan: Plan,
        lock: Lock,
        pull_request: PullRequest | None = None,
    ) -> ApplyRecord:
        """The apply job: holds the lock it was given until the apply is recorded finished."""
        started = time.monotonic()
        error: str | None = None
        before: dict[str, Health] = {}
        try:
            self.store.start_apply(apply_id)
            before = self._mark_progressing(record.repository, plan)
            self.bus.emit(
                EventType.APPLY_STARTED,
                apply_started_payload(plan, planId=record.id),
                repository=record.repository,
                plan_id=record.id,
                apply_id=apply_id,
            )
            if record.pull_request is None and self.tracker.branch_of(record.ref) is not None:
                self.tracker.fetch()  # Git may have moved since the request was checked
                self.check_applicable(record)
            result = self.engine.apply(
                plan, path=self.tracker.source_path, listener=self._listener(apply_id)
            )
            if not result.ok:
                failed = result.count(ActionStatus.FAILED)
                skipped = result.count(ActionStatus.SKIPPED)
                refused = result.count(ActionStatus.REFUSED)
                error = (
                    f"{failed} action(s) failed, {skipped} skipped, {refused} refused; "
                    "plan again to see what is left"
                )
        except MetalformError as exc:
            error = REDACTOR(str(exc))
        except Exception as exc:
            log.exception("apply %s: internal error", apply_id)
            error = f"internal error: {type(exc).__name__}"
        finally:
            try:
                done = self.store.finish_apply(apply_id, error=error)
            finally:
                lock.release()
        self.metrics.applies.labels("succeeded" if error is None else "failed").inc()
        self.metrics.apply_seconds.observe(time.monotonic() - started)
        full = self.store.get_apply(apply_id)
        if full.actions:
            self.store.upsert_resource_statuses(
                record.repository, resource_status.after_apply(full.actions, before)
            )
        results = [result_entry(a.address, a.operation, a.status, a.error) for a in full.actions]
        self.bus.emit(
            EventType.APPLY_SUCCEEDED if error is None else EventType.APPLY_FAILED,
            apply_finished_payload(
                results, done.counts, planId=record.id, revision=plan.revision, error=error
            ),
            repository=record.repository,
            plan_id=record.id,
            apply_id=apply_id,
        )
        self._rotated(record, plan, full)
        if pull_request is not None:
            self.reporter.applied(pull_request, done)
        return done

    def _rotated(self, record: PlanRecord, plan: Plan, applied: ApplyRecord) -> None:
        """Record and announce the rotations of BMC login secrets the apply finished."""
        statuses = {a.action_id: a.status for a in applied.actions}
        try:
            found = rotations(plan, statuses, base_dir=self.tracker.source_path)
        except MetalformError:
            log.warning("apply %s: could not fingerprint a rotation", applied.id, exc_info=True)
            return
        for rotation in found:
            self.store.record_rotation(
                record.repository,
                rotation.credential,
                rotation.bmcs,
                fingerprint_before=rotation.fingerprint_before,
                fingerprint_after=rotation.fingerprint_after,
                who=applied.who,
                apply_id=applied.id,
            )
            self.bus.emit(
                EventType.CREDENTIAL_ROTATED,
                rotation.payload(who=applied.who, planId=record.id, revision=plan.revision),
                repository=record.repository,
                plan_id=record.id,
                apply_id=applied.id,
            )

    def _mark_progressing(self, repository: str, plan: Plan) -> dict[str, Health]:
        """Mark the resources the apply will act on `Progressing`; returns their health
        before, which those whose actions do not run get back."""
        addresses = {a.address for a in plan.actions if a.status is ActionStatus.PLANNED}
        with self._status_lock:
            before = {  # one query, not one per resource
                status.address: status.health
                for status in self.store.list_resource_status(repository)
                if status.address in addresses
            }
            self.store.upsert_resource_statuses(repository, resource_status.progressing(addresses))
        self.changed()
        return before
