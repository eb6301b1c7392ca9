"""NotificationChannel and NotificationRule: who hears about plans, applies and drift."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from reconciler.model.base import Severity, SpecModel
from reconciler.model.credentials import SecretRef
from reconciler.model.events import NOTIFIABLE, EventType
from reconciler.model.registry import Kind, Ref

MAX_THROTTLE_SECONDS = 7 * 86400
"""Longest throttle window: a week."""
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ChannelType(str, enum.Enum):
    WEBHOOK = "webhook"
    SLACK = "slack"
    EMAIL = "email"


class Email(SpecModel):
    provider: Annotated[str, Ref("Provider", "smtp")] = Field(
        description="Name of a Provider of type smtp"
    )
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)


class NotificationChannelSpec(SpecModel):
    type: ChannelType
    url: str | SecretRef | None = None
    email: Email | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> NotificationChannelSpec:
        if self.type is ChannelType.EMAIL:
            if self.email is None or self.url is not None:
                raise ValueError("an email channel needs email and no url")
        elif self.url is None or self.email is not None:
            raise ValueError(f"a {self.type.value} channel needs url and no email")
        return self


class RuleMatch(SpecModel):
    kinds: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    severity: Severity | None = None


class Throttle(SpecModel):
    window: str = Field(pattern=r"^\d+[smhd]$", description="e.g. 10m (1s to 7d)")
    max: int = Field(ge=1)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        digits = value[:-1]
        seconds = (
            int(digits) * _SECONDS[value[-1]] if digits.isascii() and len(digits) <= 7 else None
        )
        if seconds is None or not 1 <= seconds <= MAX_THROTTLE_SECONDS:
            raise ValueError("window must be between 1s and 7d")
        return value


class NotificationRuleSpec(SpecModel):
    events: list[EventType] = Field(
        min_length=1,
        json_schema_extra={"items": {"enum": [e.value for e in EventType if e in NOTIFIABLE]}},
    )
    match: RuleMatch | None = None
    channels: list[Annotated[str, Ref("NotificationChannel")]] = Field(
        min_length=1, description="Names of NotificationChannels"
    )
    template: str | None = Field(default=None, description="Jinja2 (sandboxed) message body")
    throttle: Throttle | None = None

    @field_validator("events")
    @classmethod
    def _notifiable(cls, events: list[EventType]) -> list[EventType]:
        for event in events:
            if event not in NOTIFIABLE:
                allowed = ", ".join(sorted(e.value for e in NOTIFIABLE))
                raise ValueError(f"event {event.value!r} cannot be notified (one of: {allowed})")
        return events


NOTIFICATION_CHANNEL = Kind("NotificationChannel", NotificationChannelSpec)
NOTIFICATION_RULE = Kind("NotificationRule", NotificationRuleSpec)
