"""The plan: plain data, saved as JSON, executed exactly by apply (SPEC section 3)."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from reconciler.model.base import Address, ChangeKind, Diagnostic

FORMAT_VERSION = 1


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ActionStatus(str, enum.Enum):
    # decided at plan time
    PLANNED = "planned"
    DEFERRED = "deferred"
    REFUSED = "refused"
    # reached during apply
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"
    """The server running the apply stopped (killed, crashed) before the action ended."""

    @property
    def terminal(self) -> bool:
        """An action in this state does not change any more."""
        return self not in (ActionStatus.PLANNED, ActionStatus.RUNNING)


class DiffEntry(_Wire):
    path: str
    before: Any = None
    after: Any = None
    pending: Any = None
    """The staged value, when the system holds one that is not yet in effect."""
    sensitive: bool = False


class ChangeStatus(str, enum.Enum):
    """Why a change with drift is not acted on."""

    ACCEPTED = "accepted"
    """Policy.spec.acceptedDrift covers all its drift until a date."""
    SUSPENDED = "suspended"
    """Paused by the `metalform.io/paused` annotation."""


class Change(_Wire):
    address: Address
    action: ChangeKind
    diff: list[DiffEntry] = Field(default_factory=list)
    source: str = "git"
    status: ChangeStatus | None = None
    reason: str = ""
    """Why it is accepted or suspended."""

    @property
    def drifted(self) -> bool:
        """Its live state differs from Git and it is neither accepted nor suspended."""
        return self.action is not ChangeKind.NOOP and self.status is None


class Expectation(_Wire):
    """What the read-back after an action must show, as flat paths."""

    current: dict[str, Any] = Field(default_factory=dict)
    """Values in effect now."""
    effective: dict[str, Any] = Field(default_factory=dict)
    """Values in effect after the next reboot (pending, else current)."""
    settle_seconds: float = 0.0
    """How long the system may take to show them (a reboot applying BIOS settings)."""

    def mismatches(self, state: dict[str, Any], pending: dict[str, Any]) -> list[str]:
        problems = []
        for path, want in self.current.items():
            got = state.get(path)
            if got != want:
                problems.append(f"{path} is {got!r}, expected {want!r}")
        for path, want in self.effective.items():
            got = pending.get(path, state.get(path))
            if got != want:
                problems.append(f"{path} is {got!r} (pending included), expected {want!r}")
        return problems


class Action(_Wire):
    id: int
    address: Address
    operation: str
    params: dict[str, Any] = Field(default_factory=dict)
    depends_on: tuple[int, ...] = ()
    disruptive: bool = False
    status: ActionStatus = ActionStatus.PLANNED
    reason: str = ""
    endpoint: str = ""
    """The BMC or API the action talks to, for per-endpoint concurrency limits."""
    provider: str = ""
    """The driver key of the provider that executes it (`redfish`, `maas`, `docker`, ...)."""
    expect: Expectation = Field(default_factory=Expectation)
    description: str = ""
    wave: int = Field(default=1, ge=1)
    """The rollout wave: apply starts wave N+1 when every action of wave N is done."""


class Summary(_Wire):
    create: int = 0
    update: int = 0
    delete: int = 0
    noop: int = 0
    deferred: int = 0
    refused: int = 0
    unreachable: int = 0
    """Resources whose live state could not be read: unknown, never counted as drift."""
    accepted: int = 0
    """Resources all of whose drift is accepted (counted here, not as an update)."""
    suspended: int = 0
    """Paused resources (counted here, not by their change)."""
    waves: int = 0
    """How many waves the runnable actions take (0: nothing to run)."""


class FailureBudget(_Wire):
    """A rollout's failure budget, resolved at plan time from `Policy.spec.rollout`."""

    max_failures: int
    """Resources that may fail; one more and the rest of the rollout is skipped."""
    policy: str
    """The Policy that sets it (the strictest, when several do)."""
    limit: str
    """As written in the Policy: N or N%."""
    resources: int
    """Resources the rollout changes (what N% is of)."""


class PlanSource(_Wire):
    """What was planned: a repository path and either a Git revision or its working tree."""

    path: str
    rev: str | None = None


class Plan(_Wire):
    format_version: int = FORMAT_VERSION
    revision: str
    created_at: str
    source: PlanSource | None = None
    changes: list[Change] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=list)
    summary: Summary = Field(default_factory=Summary)
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    live_fingerprints: dict[Address, str] = Field(default_factory=dict)
    credential_fingerprints: dict[str, str] = Field(default_factory=dict)
    """Credential name -> keyed HMAC of its secret (never the value): a rotated secret
    shows here and makes the plan stale."""
    resources: dict[Address, dict[str, Any]] = Field(default_factory=dict)
    """The desired documents of the resources the actions touch (and what they reference),
    so apply can connect without re-reading Git. Secret references only, never values."""
    targets: list[Address] = Field(default_factory=list)
    refresh_only: bool = False
    failure_budget: FailureBudget | None = None

    @property
    def has_errors(self) -> bool:
        return any(d.severity.value == "error" for d in self.diagnostics)

    @property
    def runnable(self) -> list[Action]:
        return [a for a in self.actions if a.status is ActionStatus.PLANNED]

    @property
    def has_changes(self) -> bool:
        """Anything to do or any drift (a refresh-only plan has drift but no actions)."""
        return bool(self.actions) or any(c.drifted for c in self.changes)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
