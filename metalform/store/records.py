"""What the store hands out: immutable records, detached from any database session.

The store never returns ORM objects, so callers (API resources, the CLI, worker threads) can
keep a record as long as they like without touching a closed session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from reconciler.model.base import Address, Health, SyncStatus
from reconciler.model.plan import ActionStatus, Plan

T = TypeVar("T")


class RunStatus(str, enum.Enum):
    """The state of a planning job or of an apply."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """The process running it died (killed, crashed, host lost) before it ended."""

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED)


class Trigger(str, enum.Enum):
    """What started a plan or an apply."""

    CLI = "cli"
    API = "api"
    WEBHOOK = "webhook"
    DRIFT = "drift"
    POLL = "poll"
    """The server found a new head of the tracked branch (at start-up or polling)."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a newest-first listing. Pass `next_before` as `before` to get the next one."""

    items: list[T]
    next_before: str | None = None
    """The cursor of the next (older) page; None on the last page."""


@dataclass(frozen=True)
class PlanRecord:
    """A planning job and, once it succeeded, the plan it made."""

    id: str
    repository: str
    status: RunStatus
    trigger: Trigger
    who: str | None
    ref: str | None
    """What was asked for: a branch, tag or commit, or None for the tracked branch."""
    revision: str | None
    """The resolved revision (a commit or `worktree:HASH`), once known."""
    pull_request: str | None
    """A key naming the pull/merge request this plan is for, e.g. `github:org/repo#12`."""
    summary: dict[str, int]
    action_count: int
    diagnostics_count: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    document: dict[str, Any] | None = None
    owner: str | None = None
    """The server process that runs it (`host:pid:...`); None for the CLI and old rows."""
    """The plan as JSON (camelCase, `Plan.model_dump(by_alias=True)`). Listings leave it out."""

    def plan(self) -> Plan | None:
        """The stored plan as a model, or None while there is none (or it was not loaded)."""
        if self.document is None:
            return None
        return Plan.model_validate(self.document)


@dataclass(frozen=True)
class ActionResult:
    """The progress of one action of an apply."""

    apply_id: str
    action_id: int
    address: Address
    operation: str
    status: ActionStatus
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    error: str | None


@dataclass(frozen=True)
class ApplyRecord:
    """One execution of a stored plan."""

    id: str
    plan_id: str
    repository: str
    status: RunStatus
    trigger: Trigger
    who: str | None
    revision: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str | None = None
    """The server process that runs it (`host:pid:...`)."""
    counts: dict[str, int] = field(default_factory=dict)
    """How many actions are in each `ActionStatus` (by value)."""
    actions: tuple[ActionResult, ...] = ()
    """Every action, by id; `get_apply` fills it, listings leave it empty."""


@dataclass(frozen=True)
class Event:
    """One entry of the append-only event log."""

    id: int
    at: datetime
    type: str
    repository: str | None
    plan_id: str | None
    apply_id: str | None
    address: Address | None
    payload: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery seen by the server (kept to drop redeliveries)."""

    forge: str
    delivery_id: str
    event: str
    received_at: datetime
    result: str


@dataclass(frozen=True)
class ResourceStatus:
    """Sync and health of one resource of a repository, and its last action."""

    repository: str
    address: Address
    kind: str
    name: str
    labels: dict[str, str]
    sync: SyncStatus
    health: Health
    message: str | None
    last_action: str | None
    last_result: ActionStatus | None
    last_action_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class ResourceStatusUpdate:
    """A change to a resource's status; fields left None keep their stored value."""

    address: Address
    labels: dict[str, str] | None = None
    sync: SyncStatus | None = None
    health: Health | None = None
    message: str | None = None
    last_action: str | None = None
    last_result: ActionStatus | None = None
    last_action_at: datetime | None = None


@dataclass(frozen=True)
class RepositoryStatus:
    """Per tracked repository: what was last planned and applied, and resource counts."""

    key: str
    last_planned_revision: str | None
    last_planned_at: datetime | None
    last_plan_id: str | None
    last_applied_revision: str | None
    last_applied_at: datetime | None
    last_apply_id: str | None
    resources: int
    drift: int
    """Resources whose sync is OutOfSync."""
    by_kind: dict[str, int]
    by_sync: dict[str, int]
    by_health: dict[str, int]


@dataclass(frozen=True)
class RotationRecord:
    """A rotation of a BMC login secret by an apply (the audit trail; never a value)."""

    id: str
    repository: str
    apply_id: str | None
    credential: str
    who: str | None
    bmcs: tuple[str, ...]
    fingerprint_before: str | None
    fingerprint_after: str | None
    created_at: datetime
