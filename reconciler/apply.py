"""Apply: execute exactly the actions of a plan, read each resource back, record every step.

Independent actions run in parallel (bounded by the pool size; providers bound requests per
endpoint). A failed action fails its dependants (`skipped`), never the independent rest.
Waves run one after the other; once more resources failed than the plan's failure budget
allows, the resources not yet started are skipped.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from reconciler.checks import CheckRunner
from reconciler.errors import MetalformError, StalePlanError, VerificationError
from reconciler.model import Action, ActionStatus, Address, LiveResource, Plan, Resource
from reconciler.model.base import is_of
from reconciler.model.checks import ManagedSpec
from reconciler.model.plan import FailureBudget
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

    def _skip(self, action: Action, why: str) -> None:
        self._record(
            action,
            ActionResult(
                action.id, action.address, action.operation, ActionStatus.SKIPPED, error=why
            ),
        )

    def run(self) -> ApplyResult:
        actions = {a.id: a for a in self.plan.actions}
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
        schedule = _Schedule(actions, self.plan.failure_budget)
        halted = ""
        waves = list(schedule.waves())
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply") as pool:
            for number, wave in enumerate(waves, 1):
                if halted:
                    for action_id in wave:
                        schedule.state[action_id] = ActionStatus.SKIPPED
                        self._skip(schedule.actions[action_id], halted)
                    continue
                self._run_wave(pool, schedule, wave)
                if number < len(waves):
                    halted = self._wave_gate(number, wave, schedule)
        return self.result

    def _wave_gate(self, number: int, wave: list[int], schedule: _Schedule) -> str:
        """Why the waves after `number` must not start ('' when they may): a resource of
        this wave failed its health checks. Other failures are the failure budget's call."""
        addresses = {schedule.actions[i].address for i in wave}
        _, failures = wave_passed(self.result, addresses)
        unhealthy = [f for f in failures if "health check failed" in f]
        if not unhealthy:
            return ""
        log.warning("wave %d failed its health checks: %s", number, "; ".join(unhealthy))
        return (
            f"wave {number} failed its health checks ({unhealthy[0]}"
            + (f", and {len(unhealthy) - 1} more" if len(unhealthy) > 1 else "")
            + "); the rest of the rollout is skipped"
        )

    def _run_wave(self, pool: ThreadPoolExecutor, schedule: _Schedule, wave: list[int]) -> None:
        """Run one wave to its end: each action once its dependencies succeeded."""
        running: dict[Future[ActionResult], int] = {}
        checking: set[int] = set()
        members = set(wave)

        def consider(action_id: int) -> None:
            if action_id not in members or schedule.state[action_id] is not ActionStatus.PLANNED:
                return  # decided already, or waits for its own wave
            action = schedule.actions[action_id]
            verdict = schedule.verdict(action)
            if verdict is None:
                return  # a dependency of this wave is still to run
            if verdict:
                schedule.state[action_id] = ActionStatus.SKIPPED
                self._skip(action, verdict)
                for dependant in schedule.dependants[action_id]:
                    consider(dependant)
                return
            schedule.start(action)
            running[pool.submit(self._run_one, action)] = action_id

        for action_id in wave:
            consider(action_id)
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                action_id = running.pop(future)
                result = future.result()
                action = schedule.actions[action_id]
                if (
                    result.status is ActionStatus.SUCCEEDED
                    and action_id not in checking
                    and self._has_checks(action)
                    and self._last_of_resource(action, schedule.actions, schedule.state)
                ):
                    # Still running for its dependants until the checks have passed.
                    checking.add(action_id)
                    running[pool.submit(self._checked, action, result)] = action_id
                    continue
                schedule.finish(schedule.actions[action_id], result.status)
                self._record(schedule.actions[action_id], result)
                for dependant in schedule.dependants[action_id]:
                    consider(dependant)


class _Schedule:
    """Which action may start: its wave, its dependencies and the rollout's failure budget."""

    def __init__(self, actions: Mapping[int, Action], budget: FailureBudget | None) -> None:
        self.actions = actions
        self.budget = budget
        self.state: dict[int, ActionStatus] = {a.id: a.status for a in actions.values()}
        self.dependants: dict[int, list[int]] = defaultdict(list)
        for action in actions.values():
            for dep in action.depends_on:
                if dep in actions:
                    self.dependants[dep].append(action.id)
        self.started: set[Address] = set()
        self.failed: set[Address] = set()

    def waves(self) -> Iterator[list[int]]:
        """The runnable actions by wave; a plan of older format has them all in wave 1."""
        by_wave: dict[int, list[int]] = defaultdict(list)
        for action in self.actions.values():
            if action.status is ActionStatus.PLANNED:
                by_wave[self._wave(action.id)].append(action.id)
        for wave in sorted(by_wave):
            yield sorted(by_wave[wave])

    def _wave(self, action_id: int) -> int:
        # An action never runs before what it depends on, even in a hand-edited plan.
        action = self.actions[action_id]
        deps = [d for d in action.depends_on if d in self.actions and d < action_id]
        return max([action.wave, *(self._wave(d) for d in deps)])

    def verdict(self, action: Action) -> str | None:
        """'' to run now, None to wait, or why it is skipped."""
        spent = self.spent()
        if spent and action.address not in self.started:
            return spent
        waiting = False
        for dep in action.depends_on:
            status = self.state.get(dep)
            if status is None or status is ActionStatus.SUCCEEDED:
                continue
            if status in (ActionStatus.PLANNED, ActionStatus.RUNNING):
                waiting = True
                continue
            return f"action {dep} ({self.actions[dep].operation}) {status.value}"
        return None if waiting else ""

    def spent(self) -> str:
        """Why the rest of the rollout is skipped, or '' while the budget holds."""
        budget = self.budget
        if budget is None or len(self.failed) <= budget.max_failures:
            return ""
        return (
            f"failure budget spent: {len(self.failed)} of {budget.resources} resources failed, "
            f"{budget.policy} allows {budget.max_failures} ({budget.limit}); "
            "the rest of the rollout is skipped"
        )

    def start(self, action: Action) -> None:
        self.state[action.id] = ActionStatus.RUNNING
        # A resource already started finishes its chain: no server is left half-changed.
        self.started.add(action.address)

    def finish(self, action: Action, status: ActionStatus) -> None:
        self.state[action.id] = status
        if status is ActionStatus.FAILED:
            self.failed.add(action.address)
