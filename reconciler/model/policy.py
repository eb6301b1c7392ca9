"""Policy: guard rails the planner enforces."""

from __future__ import annotations

import enum
import re
from datetime import UTC, date, datetime, time
from typing import Annotated

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema, field_validator

from reconciler.model.base import FieldGlob, SpecModel
from reconciler.model.registry import Kind
from reconciler.windows import check_fires_yearly, parse_duration, zone


class Selector(SpecModel):
    kinds: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, kind: str, labels: dict[str, str]) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


def count_or_percent(value: int | str, name: str, minimum: int) -> int | str:
    """Check an `N or N%` field: an integer of at least `minimum`, or 1% to 100%."""
    if isinstance(value, int):
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}")
    elif not re.fullmatch(r"([1-9]\d?|100)%", value):
        raise ValueError(f"{name} must be a count or a percentage like 25%")
    return value


def resolve_count(value: int | str, total: int) -> int:
    """`N` as is; `N%` of `total`, rounded down."""
    if isinstance(value, int):
        return value
    return total * int(value[:-1]) // 100


class DisruptionBudget(SpecModel):
    group_by: str = Field(description="Label whose values form the groups (e.g. aggregate)")
    max: int | str = Field(
        description="Hosts of one group disrupted at once: N or N%. The planner splits a "
        "larger change into waves that run one after the other."
    )

    @field_validator("max")
    @classmethod
    def _max(cls, value: int | str) -> int | str:
        return count_or_percent(value, "max", 1)


class Rollout(SpecModel):
    max_failures: int | str | None = Field(
        default=None,
        description="Failure budget of an apply: N resources, or N% of the resources it "
        "changes. Once more fail, the rest of the rollout is skipped.",
    )
    canary: int | None = Field(
        default=None,
        ge=1,
        description="The first wave holds at most N of the disrupted resources; the next "
        "waves start only once their health checks passed.",
    )

    @field_validator("max_failures")
    @classmethod
    def _max_failures(cls, value: int | str | None) -> int | str | None:
        return None if value is None else count_or_percent(value, "maxFailures", 0)


class MaintenanceWindow(SpecModel):
    match: Selector | None = None
    cron: str = Field(description="When a window opens: 5-field cron, e.g. '0 2 * * SAT'")
    duration: str = Field(
        pattern=r"^\d+[mhd]$", description="How long it stays open: 4h (1m to 31d)"
    )
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        # CronError is a ValueError: reported with the file and line
        check_fires_yearly(value)
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value


def _until(value: object) -> date:
    """A date or a time (YAML gives either; JSON a string): one clear error otherwise."""
    if isinstance(value, date):
        return value
    why = ""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError as exc:
            # Of a date of the right shape Python says what is wrong: "month must be in 1..12".
            why = "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or an ISO 8601 time{why}")


class AcceptedDrift(SpecModel):
    """Drift a team cannot fix yet: listed as accepted, not planned, until `until`."""

    match: Selector | None = None
    fields: list[FieldGlob] = Field(min_length=1, description="Field paths ('*' allowed)")
    until: Annotated[
        date,
        PlainValidator(_until),
        PlainSerializer(lambda value: value.isoformat(), return_type=str),
        WithJsonSchema({"type": "string", "examples": ["2026-06-01", "2026-06-01T08:00:00Z"]}),
    ] = Field(description="When the acceptance ends: a date (midnight UTC) or an ISO 8601 time")
    reason: str = Field(min_length=1, description="Why the drift is accepted (shown in the plan)")

    @property
    def expires(self) -> datetime:
        """`until` as an aware time (a date means its midnight, UTC)."""
        if isinstance(self.until, datetime):
            return self.until if self.until.tzinfo else self.until.replace(tzinfo=UTC)
        return datetime.combine(self.until, time(), tzinfo=UTC)


class DriftResponse(str, enum.Enum):
    REMEDIATE = "remediate"
    REPORT = "report"


class DriftAction(SpecModel):
    """What the server's drift loop does with drift in `fields`: fix it or only report it."""

    match: Selector | None = None
    fields: list[FieldGlob] = Field(min_length=1, description="Field paths ('*' allowed)")
    action: DriftResponse


class PolicySpec(SpecModel):
    max_changes_per_apply: int | None = Field(default=None, ge=1)
    protect: Selector | None = None
    max_disrupted_per_group: DisruptionBudget | None = None
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    accepted_drift: list[AcceptedDrift] = Field(default_factory=list)
    drift_actions: list[DriftAction] = Field(default_factory=list)
    rollout: Rollout | None = None


POLICY = Kind("Policy", PolicySpec)
