"""Apply: execute exactly the actions of a plan, read each resource back, record every step.

Independent actions run in parallel (bounded by the pool size; providers bound requests per
endpoint). A failed action fails its dependants (`skipped`), never the independent rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from reconciler.checks import CheckRunner
from reconciler.errors import MetalformError, StalePlanError, VerificationError
from reconciler.model import Action, ActionStatus, Address, LiveResource, Plan, Resource
from reconciler.model.base import is_of
from reconciler.model.checks import ManagedSpec
from reconciler.provider import Provider, driver_key
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.apply")

SETTLE_POLL_SECONDS = 0.5


@dataclass
class ActionResult:
    id: int
    address: Address
    operation: str
    status: ActionStatus
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float = 0.0
    error: str | None = None


@dataclass
class ApplyResult:
    results: dict[int, ActionResult] = field(default_factory=dict)

    def count(self, status: ActionStatus) -> int:
        return sum(1 for r in self.results.values() if r.status is status)

    @property
    def ok(self) -> bool:
        return all(
            r.status is ActionStatus.SUCCEEDED
            for r in self.results.values()
            if r.status not in (ActionStatus.DEFERRED,)
        )


Listener = Callable[[Action, ActionResult], None]


def wave_passed(result: ApplyResult, addresses: Collection[Address]) -> tuple[bool, list[str]]:
    """Whether a rollout wave came through, and why not: every action on its resources
    succeeded, their health checks included (a failed check fails the resource's last action).

    The seam for the wave scheduler: the next wave starts only when this is true.
    """
    wanted = set(addresses)
    failed = [
        f"{r.address}: {r.operation} {r.status.value}" + (f": {r.error}" if r.error else "")
        for r in sorted(result.results.values(), key=lambda r: r.id)
        if r.address in wanted
        and r.status not in (ActionStatus.SUCCEEDED, ActionStatus.DEFERRED, ActionStatus.REFUSED)
    ]
    return not failed, failed


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def check_fresh(plan: Plan, revision: str, live: Mapping[Address, LiveResource]) -> None:
    """Raise StalePlanError when Git or a touched resource changed since the plan was made."""
    if revision != plan.revision:
        raise StalePlanError(
            why=f"the revision is now {revision}, the plan was made at {plan.revision}; plan again"
        )
    changed = [
        address
        for address, fingerprint in plan.live_fingerprints.items()
        if address not in live or live[address].fingerprint() != fingerprint
    ]
    if changed:
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        raise StalePlanError(
            why=f"the live state of {shown} changed since the plan was made; plan again"
        )


def _deleted(action: Action) -> Resource:
    """A resource Git no longer declares: the plan carries its last known document."""
    raise MetalformError(f"the plan holds no copy of {action.address} to act on")


class Applier:
    """Runs one plan. `execute` is the step of one action; `run` schedules them all."""

    def __init__(
        self,
        plan: Plan,
        resources: Mapping[Address, Resource],
        providers: Mapping[str, Provider],
        *,
        parallelism: int = 16,
        listener: Listener | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.plan = plan
        self.resources = resources
        self.providers = providers
        self.parallelism = parallelism
        self.listener = listener or (lambda action, result: None)
        self.sleep = sleep
        self.result = ApplyResult()
        self.checks = CheckRunner(providers, resources, sleep=sleep)

    def _provider(self, action: Action, resource: Resource) -> Provider:
        key = action.provider or driver_key(resource, self.resources)
        if key is None or key not in self.providers:
            raise MetalformError(f"no provider for {resource.address}")
        return self.providers[key]

    def execute(self, action: Action) -> None:
        """Perform one action and verify it by reading the resource back."""
        resource = self.resources.get(action.address) or _deleted(action)
        provider = self._provider(action, resource)
        live = provider.execute(action, resource)
        problems = action.expect.mismatches(live.state, live.pending)
        deadline = time.monotonic() + action.expect.settle_seconds
        while problems and time.monotonic() < deadline:
            self.sleep(SETTLE_POLL_SECONDS)
            live = provider.read([resource])[action.address]
            if not live.reachable:
                continue  # a rebooting BMC may stop answering for a while
            problems = action.expect.mismatches(live.state, live.pending)
        if problems:
            raise VerificationError(operation=action.operation, problems="; ".join(problems))

    def _record(self, action: Action, result: ActionResult) -> None:
        self.result.results[action.id] = result
        self.listener(action, result)

    def _run_one(self, action: Action) -> ActionResult:
        result = ActionResult(
            action.id, action.address, action.operation, ActionStatus.RUNNING, started_at=_now()
        )
        self._record(action, result)
        started = time.monotonic()
        try:
            self.execute(action)
            status, error = ActionStatus.SUCCEEDED, None
        except MetalformError as exc:
            status, error = ActionStatus.FAILED, REDACTOR(str(exc))
        except Exception as exc:  # a provider bug must fail its action, not the whole apply
            log.debug("action %s failed", action.id, exc_info=True)
            status, error = ActionStatus.FAILED, REDACTOR(f"internal error: {exc!r}")
        return ActionResult(
            action.id,
            action.address,
            action.operation,
            status,
            started_at=result.started_at,
            finished_at=_now(),
            seconds=round(time.monotonic() - started, 3),
            error=error,
        )

    def _checked(self, action: Action, result: ActionResult) -> ActionResult:
        """The resource's last action, after its health checks: failed if one of them fails
        (the resource counts as failed and its dependants are skipped)."""
        resource = self.resources.get(action.address)
        failures = self.checks.failures(resource) if resource is not None else []
        if not failures:
            return result
        log.info("health checks of %s failed: %s", action.address, "; ".join(failures))
        return replace(
            result,
            status=ActionStatus.FAILED,
            finished_at=_now(),
            error=f"health check failed: {'; '.join(failures)}",
        )

    def _has_checks(self, action: Action) -> bool:
        resource = self.resources.get(action.address)
        return resource is not None and is_of(resource, ManagedSpec) and bool(resource.spec.checks)

    def _last_of_resource(
        self, action: Action, actions: Mapping[int, Action], state: Mapping[int, ActionStatus]
    ) -> bool:
        """Whether `action` just ended its resource's actions, all of them successfully."""
        return all(
            state[other.id] in (ActionStatus.SUCCEEDED, ActionStatus.DEFERRED, ActionStatus.REFUSED)
            for other in actions.values()
            if other.address == action.address and other.id != action.id
        )

    def run(self) -> ApplyResult:
        actions = {a.id: a for a in self.plan.actions}
        state: dict[int, ActionStatus] = {a.id: a.status for a in actions.values()}
        for action in actions.values():
            if action.status is not ActionStatus.PLANNED:
                self._record(
                    action,
                    ActionResult(
                        action.id,
                        action.address,
                        action.operation,
                        action.status,
                        error=action.reason or None,
                    ),
                )
        running: dict[Future[ActionResult], int] = {}
        checking: set[int] = set()
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply") as pool:
            while True:
                for action in actions.values():
                    if state[action.id] is not ActionStatus.PLANNED:
                        continue
                    deps = [state[d] for d in action.depends_on if d in state]
                    if any(
                        s is not ActionStatus.SUCCEEDED
                        and s is not ActionStatus.PLANNED
                        and s is not ActionStatus.RUNNING
                        for s in deps
                    ):
                        failed = next(
                            d
                            for d in action.depends_on
                            if state.get(d)
                            not in (
                                ActionStatus.SUCCEEDED,
                                ActionStatus.PLANNED,
                                ActionStatus.RUNNING,
                            )
                        )
                        state[action.id] = ActionStatus.SKIPPED
                        self._record(
                            action,
                            ActionResult(
                                action.id,
                                action.address,
                                action.operation,
                                ActionStatus.SKIPPED,
                                error=f"action {failed} ({actions[failed].operation}) "
                                f"{state[failed].value}",
                            ),
                        )
                        continue
                    if all(s is ActionStatus.SUCCEEDED for s in deps):
                        state[action.id] = ActionStatus.RUNNING
                        running[pool.submit(self._run_one, action)] = action.id
                if not running:
                    # Skips can unlock more skips; loop until nothing is left to decide.
                    if any(s is ActionStatus.PLANNED for s in state.values()):
                        continue
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    action_id = running.pop(future)
                    result = future.result()
                    action = actions[action_id]
                    if (
                        result.status is ActionStatus.SUCCEEDED
                        and action_id not in checking
                        and self._has_checks(action)
                        and self._last_of_resource(action, actions, state)
                    ):
                        # Still running for its dependants until the checks have passed.
                        checking.add(action_id)
                        running[pool.submit(self._checked, action, result)] = action_id
                        continue
                    state[action_id] = result.status
                    self._record(action, result)
        return self.result
