"""Planning jobs of the ControlPlane: fetch, plan the exact commit, record, report."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

from metalform.notify.payloads import (
    MAX_ADDRESSES,
    plan_failed_payload,
    plan_payload,
    planned_event,
)
from metalform.server import resource_status
from metalform.server.control_base import ControlBase, DriftState
from metalform.server.drift_rules import reported_drift, why_not_auto_applied
from metalform.server.jobs import ShuttingDown
from metalform.server.reporting import PullRequest
from metalform.server.repository import (
    RepositoryUnavailable,
    pull_request_refspecs,
)
from metalform.store import (
    ConflictError,
    PlanRecord,
    Trigger,
)
from reconciler.credentials import with_rotations
from reconciler.engine import PlanRun
from reconciler.errors import InputError, MetalformError
from reconciler.model import Health, Plan
from reconciler.model.events import EventType
from reconciler.secrets import REDACTOR
from webhooks import CommitState

log = logging.getLogger("metalform.server")


class Planning(ControlBase):
    """Requests and runs plans."""

    def request_plan(
        self,
        ref: str | None = None,
        *,
        trigger: Trigger = Trigger.API,
        who: str | None = None,
        sha: str | None = None,
        pull_request: PullRequest | None = None,
        auto_apply: bool = False,
        detect_drift: bool = False,
    ) -> PlanRecord:
        """Record a pending plan of `ref` (a branch, tag or commit; None: the tracked branch)
        or of the exact commit `sha`, and queue it. With `detect_drift`, changes found raise
        `drift.detected`."""
        record = self.store.create_plan(
            self.repository,
            ref=ref if ref is not None else (sha or self.config.branch),
            revision=sha,
            trigger=trigger,
            who=who,
            pull_request=pull_request.key if pull_request else None,
            owner=self.owner,
        )
        # plan.created is emitted when the plan is made (run_plan): only then does it say
        # what changes, which notification rules match on. The store has the record now.
        self.changed()
        try:
            self.workers.submit(
                f"plan {record.id}",
                self.run_plan,
                record.id,
                pull_request,
                auto_apply,
                detect_drift,
                on_crash=lambda exc: self._plan_crashed(record.id, exc),
            )
        except ShuttingDown:
            self.store.fail_plan(record.id, "the server shut down before the plan ran")
            raise MetalformError("the server is shutting down") from None
        return record

    def _resolve(self, record: PlanRecord, pull_request: PullRequest | None) -> str:
        extra = (
            pull_request_refspecs(pull_request.forge, pull_request.number) if pull_request else []
        )
        try:
            self.tracker.fetch(extra)
        except RepositoryUnavailable:
            # Plan from what was fetched before if the commit is there; say why otherwise.
            if record.revision is None or not self.tracker.has_commit(record.revision):
                raise
        if record.revision is not None:
            if not self.tracker.has_commit(record.revision):
                raise RepositoryUnavailable(f"commit {record.revision} is not in the repository")
            return record.revision
        return self.tracker.resolve(record.ref)

    def _applied_secrets(self) -> dict[str, str]:
        """Credential fingerprints of the last applied plan, to show rotated secrets."""
        status = self.store.repository_status(self.repository)
        if status is None or status.last_apply_id is None:
            return {}
        try:
            applied = self.store.get_apply(status.last_apply_id)
            plan = self.store.get_plan(applied.plan_id).plan()
        except MetalformError:
            return {}
        return dict(plan.credential_fingerprints) if plan is not None else {}

    def run_plan(
        self,
        plan_id: str,
        pull_request: PullRequest | None = None,
        auto_apply: bool = False,
        detect_drift: bool = False,
    ) -> PlanRecord:
        """The planning job: fetch, plan the exact commit, record, report."""
        started = time.monotonic()
        record = self.store.start_plan(plan_id)
        if pull_request is not None:
            self.reporter.status(pull_request, CommitState.PENDING, "Planning...", plan_id)
        sha: str | None = None
        try:
            sha = self._resolve(record, pull_request)
            if pull_request is not None and pull_request.head_sha is None:
                pull_request = PullRequest(
                    pull_request.forge,
                    pull_request.repository,
                    pull_request.number,
                    sha,
                    pull_request.repository_id,
                )
            run = self.engine.plan(self.tracker.source_path, rev=sha)
        except Exception as exc:
            return self._plan_raised(plan_id, exc, sha, pull_request, started, detect_drift)
        return self._planned(record, run, pull_request, started, auto_apply, detect_drift)

    def _plan_raised(
        self,
        plan_id: str,
        exc: Exception,
        sha: str | None,
        pull_request: PullRequest | None,
        started: float,
        detect_drift: bool,
    ) -> PlanRecord:
        """Record why a plan could not be made: bad input, an unreachable system, a bug."""
        trigger = self.store.get_plan(plan_id).trigger.value
        if isinstance(exc, InputError):
            lines = [d.render() for d in exc.diagnostics]
            error = REDACTOR(f"{exc} at {sha}:\n" + "\n".join(lines))
            return self._plan_failed(
                plan_id,
                error,
                pull_request,
                started,
                trigger,
                invalid_input=True,
                detect_drift=detect_drift,
                diagnostics=exc.diagnostics,
                revision=sha,
            )
        if isinstance(exc, MetalformError):
            error = REDACTOR(str(exc))
        else:
            log.exception("plan %s: internal error", plan_id, exc_info=exc)
            error = f"internal error: {type(exc).__name__}"
        return self._plan_failed(
            plan_id,
            error,
            pull_request,
            started,
            trigger,
            invalid_input=False,
            detect_drift=detect_drift,
        )

    def _planned(
        self,
        record: PlanRecord,
        run: PlanRun,
        pull_request: PullRequest | None,
        started: float,
        auto_apply: bool,
        detect_drift: bool,
    ) -> PlanRecord:
        """Record a plan that was made; tell the bus, the forge and, when asked, apply it."""
        plan_id = record.id
        done = self.store.finish_plan(plan_id, with_rotations(run.plan, self._applied_secrets()))
        self.changed()
        self.metrics.plans.labels("succeeded", record.trigger.value).inc()
        self.metrics.plan_seconds.observe(time.monotonic() - started)
        tracked = pull_request is None and self.tracker.branch_of(record.ref) == self.config.branch
        if tracked:
            # before this plan's events, so that the rules of the revision just planned hear them
            self.notifications.update(run.desired, run.plan.revision, self.tracker.source_path)
        self._emit_planned(record, run.plan)
        if tracked:
            self._record_statuses(run)
            if detect_drift:
                self._drift_checked(done, run)
        if pull_request is not None:
            self.reporter.planned(pull_request, plan_id, run.plan)
        self.changed()
        held = why_not_auto_applied(run) if auto_apply else None
        if held is not None:
            log.warning("auto-apply of plan %s not started: %s", plan_id, held)
        elif auto_apply and tracked and run.plan.runnable and not run.plan.has_errors:
            try:
                self.request_apply(plan_id, trigger=record.trigger, who="autoApply")
            except (ConflictError, MetalformError) as exc:
                log.warning("auto-apply of plan %s not started: %s", plan_id, exc)
        return done

    def _emit_planned(self, record: PlanRecord, plan: Plan) -> None:
        """plan.failed for a plan with errors, plan.created for one with changes; a plan with
        neither is not news (a drift check finding nothing would otherwise notify each time)."""
        event = planned_event(plan, ref=record.ref, trigger=record.trigger.value, who=record.who)
        if event is not None:
            self.bus.emit(event[0], event[1], repository=self.repository, plan_id=record.id)

    def _plan_failed(
        self,
        plan_id: str,
        error: str,
        pull_request: PullRequest | None,
        started: float,
        trigger: str,
        *,
        invalid_input: bool,
        detect_drift: bool = False,
        diagnostics: list[Any] | None = None,
        revision: str | None = None,
    ) -> PlanRecord:
        record = self.store.fail_plan(plan_id, error)
        self.metrics.plans.labels("failed", trigger).inc()
        self.metrics.plan_seconds.observe(time.monotonic() - started)
        self.bus.emit(
            EventType.PLAN_FAILED,
            plan_failed_payload(
                error.splitlines()[0] if error else "",
                diagnostics or [],
                ref=record.ref,
                trigger=trigger,
                revision=revision,
            ),
            repository=self.repository,
            plan_id=plan_id,
        )
        if detect_drift:
            self.drift = DriftState(
                time.time(), plan_id, None, [], error.splitlines()[0] if error else None
            )
        if pull_request is not None:
            self.reporter.plan_failed(pull_request, plan_id, error, invalid_input=invalid_input)
        return record

    def _plan_crashed(self, plan_id: str, exc: BaseException) -> None:
        """An exception escaped the planning job: fail the plan if it is still open."""
        if self.store.get_plan(plan_id).status.terminal:
            return  # it was recorded; what failed came after
        error = f"internal error: {type(exc).__name__}"
        with contextlib.suppress(ConflictError):  # it ended meanwhile
            self._plan_failed(
                plan_id, error, None, time.monotonic(), Trigger.API.value, invalid_input=False
            )
        self.changed()

    def _record_statuses(self, run: PlanRun) -> None:
        with self._status_lock:
            self._record_statuses_locked(run)

    def _record_statuses_locked(self, run: PlanRun) -> None:
        updates = resource_status.after_plan(run)
        if self.store.unfinished_applies(self.repository):
            # A plan finishing while an apply runs (a poll, a drift check) must not take
            # `Progressing` away from what the apply is still changing: the apply sets the
            # outcome when it ends.
            changing = {
                status.address
                for status in self.store.list_resource_status(
                    self.repository, health=Health.PROGRESSING
                )
            }
            updates = [
                dataclasses.replace(u, health=None) if u.address in changing else u for u in updates
            ]
        self.store.upsert_resource_statuses(self.repository, updates, prune=True)
        self.metrics.drift.set(len(resource_status.drifted(run)))

    def _drift_checked(self, record: PlanRecord, run: PlanRun) -> None:
        drifted = resource_status.drifted(run)
        self.drift = DriftState(time.time(), record.id, run.plan.revision, drifted)
        if drifted:
            payload = plan_payload(run.plan)
            payload.update(resources=len(drifted), addresses=drifted[:MAX_ADDRESSES])
            reported = reported_drift(run)
            if reported:
                # driftActions: report: told, never fixed on its own
                payload.update(reportOnly=sorted(reported)[:MAX_ADDRESSES])
            self.bus.emit(
                EventType.DRIFT_DETECTED, payload, repository=self.repository, plan_id=record.id
            )
