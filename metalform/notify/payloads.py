"""Notifications for the CLI and the server: event payloads, and sending them from one run.

The server emits events on its bus (`metalform.events`); the CLI has no bus, yet both must
give notification rules the same data to match and render. So the payloads are built here,
once: the addresses an event is about (rules match on their kinds and labels), summary
counts, error diagnostics and per-action results, every string passed through the redactor.

`RunNotifications` is the CLI's side: it routes the events of one `plan` or `apply` through
the desired state's NotificationRules synchronously and flushes held digests before the
command exits. A delivery failure is logged by the notifier, never raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metalform.events import BusEvent
from metalform.notify import NotificationConfigError, Notifier
from metalform.notify.templates import redact_data
from metalform.notify.throttle_state import ThrottleState
from reconciler.engine import CredentialResolver
from reconciler.errors import MetalformError
from reconciler.load import DesiredState
from reconciler.model import Action, ActionStatus, Diagnostic, Plan
from reconciler.model.base import Severity
from reconciler.model.credentials import SecretRef
from reconciler.model.events import EventType
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.notify")

MAX_ADDRESSES = 50
"""Addresses an event lists: enough to match rules and name what changed, bounded so that a
plan of a whole fleet does not make every event (and its stored copy) megabytes long."""
MAX_RESULTS = 200
"""Per-action results an apply event carries, for the same reason."""

_ADDRESS = re.compile(r"\b(NotificationRule|NotificationChannel|Provider)/([a-z0-9][a-z0-9.-]*)")


def _redacted(data: dict[str, Any]) -> dict[str, Any]:
    """Payloads are stored and sent as they are: scrub every string now."""
    result: dict[str, Any] = redact_data(data, REDACTOR)
    return result


def changed_addresses(plan: Plan) -> list[str]:
    """What a plan changes: resources with a non-noop change or an action, in plan order."""
    seen: dict[str, None] = {}
    for change in plan.changes:
        if change.action.value != "noop":
            seen.setdefault(change.address, None)
    for action in plan.actions:
        seen.setdefault(action.address, None)
    return list(seen)


def touched_addresses(actions: Iterable[Action]) -> list[str]:
    """The resources a set of actions touches, once each, in order."""
    return list(dict.fromkeys(a.address for a in actions))


def error_diagnostics(diagnostics: Iterable[Diagnostic]) -> list[dict[str, Any]]:
    """The errors among diagnostics as plain data (warnings would only add noise)."""
    return [
        d.model_dump(mode="json", by_alias=True, exclude_none=True)
        for d in diagnostics
        if d.severity is Severity.ERROR
    ]


def plan_payload(plan: Plan, **extra: Any) -> dict[str, Any]:
    """The payload of plan.created, plan.failed and drift.detected for a computed plan."""
    addresses = changed_addresses(plan)
    payload: dict[str, Any] = {
        **extra,
        "revision": plan.revision,
        "addresses": addresses[:MAX_ADDRESSES],
        "resources": len(addresses),
        "summary": plan.summary.model_dump(),
        "diagnostics": error_diagnostics(plan.diagnostics),
    }
    return _redacted(payload)


def planned_event(plan: Plan, **extra: Any) -> tuple[str, dict[str, Any]] | None:
    """The event a computed plan raises: plan.failed when it has errors, plan.created when it
    has changes, none otherwise (a re-plan finding nothing to do is not news)."""
    if not (plan.has_errors or plan.has_changes):
        return None
    payload = plan_payload(plan, **extra)
    if plan.has_errors:
        payload["error"] = f"the plan has {len(payload['diagnostics'])} error(s)"
        return EventType.PLAN_FAILED, payload
    return EventType.PLAN_CREATED, payload


def plan_failed_payload(
    error: str, diagnostics: Iterable[Diagnostic], **extra: Any
) -> dict[str, Any]:
    """plan.failed when no plan was made (invalid input, unreachable repository, ...)."""
    return _redacted(
        {**extra, "error": error, "addresses": [], "diagnostics": error_diagnostics(diagnostics)}
    )


def result_entry(
    address: str, operation: str, status: ActionStatus | str, error: str | None
) -> dict[str, Any]:
    """One action's outcome as an apply event lists it."""
    return {
        "address": address,
        "operation": operation,
        "status": status.value if isinstance(status, ActionStatus) else str(status),
        "error": error,
    }


def apply_started_payload(plan: Plan, **extra: Any) -> dict[str, Any]:
    """apply.started: the actions about to run (their planned status) and what they touch."""
    results = [
        result_entry(a.address, a.operation, a.status, a.reason or None) for a in plan.actions
    ]
    summary: dict[str, int] = {}
    for action in plan.actions:
        summary[action.status.value] = summary.get(action.status.value, 0) + 1
    payload = {
        **extra,
        "revision": plan.revision,
        "addresses": touched_addresses(plan.actions)[:MAX_ADDRESSES],
        "summary": summary,
        "results": results[:MAX_RESULTS],
    }
    return _redacted(payload)


def apply_finished_payload(
    results: Sequence[Mapping[str, Any]], counts: Mapping[str, int], **extra: Any
) -> dict[str, Any]:
    """apply.succeeded / apply.failed: per action outcome, counts, and what was touched."""
    addresses = list(dict.fromkeys(str(r["address"]) for r in results))
    payload = {
        **extra,
        "addresses": addresses[:MAX_ADDRESSES],
        "counts": dict(counts),
        "summary": dict(counts),
        "results": [dict(r) for r in results[:MAX_RESULTS]],
    }
    return _redacted(payload)


# --- configuration problems ----------------------------------------------------------------


def _no_secrets_now(what: object) -> Any:
    """A resolver that refuses: checking the configuration must not read a secret."""

    def refuse(ref: str | SecretRef) -> Any:
        raise MetalformError(f"{what} secrets are not resolved while validating")

    return refuse


def notification_problems(desired: DesiredState) -> list[Diagnostic]:
    """The notification configuration's problems (a template error, an email channel whose
    provider is not smtp, ...) as error diagnostics naming the resource and where it is."""
    if not desired.of_kind("NotificationRule") and not desired.of_kind("NotificationChannel"):
        return []
    credentials: Any = _no_secrets_now("credential")
    secrets: Any = _no_secrets_now("channel")
    try:
        notifier = Notifier.from_desired(desired, credentials, secret_resolver=secrets)
    except NotificationConfigError as exc:
        return [_diagnostic(desired, problem) for problem in exc.problems]
    notifier.close()
    return []


def _diagnostic(desired: DesiredState, problem: str) -> Diagnostic:
    match = _ADDRESS.search(problem)
    address = f"{match.group(1)}/{match.group(2)}" if match else None
    path = ["spec", "template"] if "template of" in problem else ["spec"]
    location = desired.locate(address, path) if address else None
    if address and location is None:
        location = desired.locate(address, [])
    return Diagnostic(
        severity=Severity.ERROR, message=REDACTOR(problem), address=address, location=location
    )


# --- the CLI ---------------------------------------------------------------------------------


class RunNotifications:
    """Sends the events of one CLI run through the desired state's rules, synchronously."""

    def __init__(
        self,
        notifier: Notifier | None,
        repository: str | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.notifier = notifier
        self.repository = repository
        self.on_close = on_close
        """Called last by `close()` (the CLI closes the state store of the windows there)."""

    @classmethod
    def from_desired(
        cls,
        desired: DesiredState,
        base_dir: Path,
        repository: str | None = None,
        state: ThrottleState | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> RunNotifications:
        """Rules and channels of `desired`; a broken configuration only disables sending
        (and says why), it never stops the plan or apply it would report on."""
        if not desired.of_kind("NotificationRule"):
            return cls(None, repository, on_close)
        try:
            notifier = Notifier.from_desired(
                desired,
                CredentialResolver(desired.resources, base_dir),
                base_dir=base_dir,
                state=state,
            )
        except NotificationConfigError as exc:
            log.warning("notifications are off for this run: %s", REDACTOR(str(exc)))
            return cls(None, repository, on_close)
        return cls(notifier, repository, on_close)

    def emit(self, type: str, payload: Mapping[str, Any]) -> int:
        """Route one event; returns the messages delivered (0 when notifications are off)."""
        if self.notifier is None:
            return 0
        event = BusEvent(type, dict(payload), repository=self.repository)
        try:
            return self.notifier.notify(event)
        except Exception as exc:
            # A notification must never fail the command it reports on.
            log.warning("notification of %s failed: %s", type, type_name(exc))
            return 0

    def close(self) -> None:
        """Send held digests and release connections (before the command exits)."""
        try:
            if self.notifier is not None:
                self.notifier.close()
        except Exception as exc:
            log.warning("flushing notifications failed: %s", type_name(exc))
        finally:
            if self.on_close is not None:
                self.on_close()


def type_name(exc: BaseException) -> str:
    """An unexpected exception by its class only: its text may quote a secret URL."""
    return type(exc).__name__


__all__ = [
    "MAX_ADDRESSES",
    "RunNotifications",
    "apply_finished_payload",
    "apply_started_payload",
    "changed_addresses",
    "error_diagnostics",
    "notification_problems",
    "plan_failed_payload",
    "plan_payload",
    "planned_event",
    "result_entry",
]
