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

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from metalform.events import EventBus
from metalform.notify.payloads import (
    MAX_ADDRESSES,
    apply_finished_payload,
    apply_started_payload,
    plan_failed_payload,
    plan_payload,
    planned_event,
    result_entry,
)
from metalform.server import resource_status
from metalform.server.config import ServerConfig
from metalform.server.drift import reported_drift, why_not_auto_applied
from metalform.server.jobs import ShuttingDown, WorkerPool
from metalform.server.metrics import Metrics
from metalform.server.notifications import ServerNotifications
from metalform.server.reporting import ForgeReporter, PullRequest
from metalform.server.repository import (
    RepositoryUnavailable,
    Tracker,
    pull_request_refspecs,
)
from metalform.store import (
    ApplyRecord,
    ConflictError,
    Lock,
    PlanRecord,
    RunStatus,
    Store,
    Trigger,
    locks,
    recovery,
    retention,
)
from reconciler.apply import ActionResult as EngineActionResult
from reconciler.credentials import with_rotations
from reconciler.engine import Engine, PlanRun
from reconciler.errors import InputError, MetalformError, StalePlanError
from reconciler.model import Action, ActionStatus, Health, Plan
from reconciler.model.events import EventType
from reconciler.secrets import REDACTOR
from webhooks import CommitState, ForgeClient

log = logging.getLogger("metalform.server")

TERMINAL = frozenset(
    {
        ActionStatus.SUCCEEDED,
        ActionStatus.FAILED,
        ActionStatus.SKIPPED,
        ActionStatus.DEFERRED,
        ActionStatus.REFUSED,
    }
)


class ApplyInProgress(ConflictError):
    """Another apply of the repository holds its lock (here or on another replica)."""

    template = "another apply of {repository} is running; try again when it has finished"


class PlanNotApplicable(ConflictError):
    """The plan cannot be applied as it is (failed, has errors, not the latest)."""


@dataclass
class DriftState:
    """The last drift check, for /api/v1/status."""

    checked_at: float | None = None
    plan_id: str | None = None
    revision: str | None = None
    drifted: list[str] = field(default_factory=list)
    error: str | None = None


class ControlPlane:
    """Everything behind the API: tracker, workers, store, engine, events, forge reporting."""

    def __init__(
        self,
        config: ServerConfig,
        engine: Engine,
        store: Store,
        *,
        tracker: Tracker | None = None,
        forge_clients: Mapping[str, ForgeClient] | None = None,
        metrics: Metrics | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self.tracker = tracker or Tracker(
            config.repository_url, config.branch, config.path, config.data_dir
        )
        self.metrics = metrics or Metrics()
        self.bus = bus or EventBus(store)
        self.reporter = ForgeReporter(forge_clients or {}, store, config.public_url)
        self.owner = locks.new_owner()
        instance = store.try_lock(recovery.instance_lock_name(self.owner), owner=self.owner)
        if instance is None:  # the name is new: only a broken database refuses it
            raise MetalformError("could not register this server process in the store")
        self._instance_lock: Lock = instance
        self.workers = WorkerPool(config.workers, on_change=self.metrics.jobs.set)
        self.drift = DriftState()
        self.started_at = time.time()
        self._version = 0
        # any event may change what the status shows; readers compare versions to cache it
        self.bus.subscribe(lambda event: self.changed())
        self.notifications = ServerNotifications(self.bus)
        self._last_head: str | None = None
        self._head_lock = threading.Lock()

    @property
    def repository(self) -> str:
        return self.tracker.key

    @property
    def version(self) -> int:
        """Grows whenever the server records something (for caches of derived views)."""
        return self._version

    def changed(self) -> None:
        self._version += 1  # a lost increment under a race only costs a cache refresh

    # --- plans -------------------------------------------------------------------------

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
        trigger = record.trigger.value
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
        except InputError as exc:
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
        except MetalformError as exc:
            return self._plan_failed(
                plan_id,
                REDACTOR(str(exc)),
                pull_request,
                started,
                trigger,
                invalid_input=False,
                detect_drift=detect_drift,
            )
        except Exception as exc:
            log.exception("plan %s: internal error", plan_id)
            return self._plan_failed(
                plan_id,
                f"internal error: {type(exc).__name__}",
                pull_request,
                started,
                trigger,
                invalid_input=False,
                detect_drift=detect_drift,
            )
        done = self.store.finish_plan(plan_id, with_rotations(run.plan, self._applied_secrets()))
        self.changed()
        self.metrics.plans.labels("succeeded", trigger).inc()
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
        updates = resource_status.after_plan(run)
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

    # --- applies -----------------------------------------------------------------------

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
            if status in TERMINAL:
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
        if pull_request is not None:
            self.reporter.applied(pull_request, done)
        return done

    def _mark_progressing(self, repository: str, plan: Plan) -> dict[str, Health]:
        """Mark the resources the apply will act on `Progressing`; returns their health
        before, which those whose actions do not run get back."""
        addresses = {a.address for a in plan.actions if a.status is ActionStatus.PLANNED}
        before: dict[str, Health] = {}
        for address in addresses:
            status = self.store.get_resource_status(repository, address)
            if status is not None:
                before[address] = status.health
        self.store.upsert_resource_statuses(repository, resource_status.progressing(addresses))
        self.changed()
        return before

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
