"""The event vocabulary, defined once: the server's event log, its bus and notification rules."""

from __future__ import annotations

import enum


class EventType(str, enum.Enum):
    PLAN_CREATED = "plan.created"
    PLAN_STARTED = "plan.started"
    PLAN_SUCCEEDED = "plan.succeeded"
    PLAN_FAILED = "plan.failed"
    PLAN_INTERRUPTED = "plan.interrupted"
    APPLY_CREATED = "apply.created"
    APPLY_STARTED = "apply.started"
    APPLY_SUCCEEDED = "apply.succeeded"
    APPLY_FAILED = "apply.failed"
    APPLY_INTERRUPTED = "apply.interrupted"
    ACTION_UPDATED = "action.updated"
    DRIFT_DETECTED = "drift.detected"
    WEBHOOK_RECEIVED = "webhook.received"
    WEBHOOK_REJECTED = "webhook.rejected"
    CREDENTIAL_ROTATED = "credential.rotated"
    """An apply set BMCs to a Credential's new secret (who, which BMCs, fingerprints)."""


NOTIFIABLE = frozenset(
    {
        EventType.PLAN_CREATED,
        EventType.PLAN_FAILED,
        EventType.APPLY_STARTED,
        EventType.APPLY_SUCCEEDED,
        EventType.APPLY_FAILED,
        EventType.DRIFT_DETECTED,
        EventType.WEBHOOK_REJECTED,
        EventType.CREDENTIAL_ROTATED,
    }
)
"""The events notification rules can name (SPEC section 1, NotificationRule).

Not `plan.interrupted` / `apply.interrupted`: they are found when a server starts, before it
has loaded the rules of any revision, so a rule naming them could never be honoured."""

APPLY_ENDED = frozenset(
    {EventType.APPLY_SUCCEEDED, EventType.APPLY_FAILED, EventType.APPLY_INTERRUPTED}
)
"""The last event of an apply: its event stream ends with one of these."""
