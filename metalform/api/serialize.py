"""Store records as the API's JSON (camelCase, ISO 8601 times)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from metalform.store import (
    ActionResult,
    ApplyRecord,
    Event,
    PlanRecord,
    RepositoryStatus,
    ResourceStatus,
    RotationRecord,
)


def when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def plan(record: PlanRecord, *, with_document: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "plan",
        "id": record.id,
        "status": record.status.value,
        "trigger": record.trigger.value,
        "who": record.who,
        "ref": record.ref,
        "revision": record.revision,
        "pullRequest": record.pull_request,
        "summary": record.summary,
        "actionCount": record.action_count,
        "diagnosticsCount": record.diagnostics_count,
        "error": record.error,
        "createdAt": when(record.created_at),
        "startedAt": when(record.started_at),
        "finishedAt": when(record.finished_at),
    }
    if with_document:
        data["plan"] = record.document
    return data


def action(result: ActionResult) -> dict[str, Any]:
    return {
        "id": result.action_id,
        "address": result.address,
        "operation": result.operation,
        "status": result.status.value,
        "startedAt": when(result.started_at),
        "finishedAt": when(result.finished_at),
        "durationSeconds": result.duration_seconds,
        "error": result.error,
    }


def apply(record: ApplyRecord, *, with_actions: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "apply",
        "id": record.id,
        "planId": record.plan_id,
        "status": record.status.value,
        "trigger": record.trigger.value,
        "who": record.who,
        "revision": record.revision,
        "error": record.error,
        "counts": record.counts,
        "createdAt": when(record.created_at),
        "startedAt": when(record.started_at),
        "finishedAt": when(record.finished_at),
    }
    if with_actions:
        data["actions"] = [action(a) for a in record.actions]
    return data


def rotation(record: RotationRecord) -> dict[str, Any]:
    """A rotation of a BMC login secret: fingerprints only, never a value."""
    return {
        "type": "rotation",
        "id": record.id,
        "applyId": record.apply_id,
        "credential": record.credential,
        "who": record.who,
        "bmcs": list(record.bmcs),
        "fingerprintBefore": record.fingerprint_before,
        "fingerprintAfter": record.fingerprint_after,
        "createdAt": when(record.created_at),
    }


def history_item(record: PlanRecord | ApplyRecord | RotationRecord) -> dict[str, Any]:
    if isinstance(record, PlanRecord):
        return plan(record)
    if isinstance(record, ApplyRecord):
        return apply(record)
    return rotation(record)


def resource(status: ResourceStatus) -> dict[str, Any]:
    return {
        "address": status.address,
        "kind": status.kind,
        "name": status.name,
        "labels": status.labels,
        "sync": status.sync.value,
        "health": status.health.value,
        "message": status.message,
        "lastAction": status.last_action,
        "lastResult": status.last_result.value if status.last_result else None,
        "lastActionAt": when(status.last_action_at),
        "updatedAt": when(status.updated_at),
    }


def repository(status: RepositoryStatus | None) -> dict[str, Any]:
    if status is None:
        return {
            "lastPlannedRevision": None,
            "lastPlannedAt": None,
            "lastPlanId": None,
            "lastAppliedRevision": None,
            "lastAppliedAt": None,
            "lastApplyId": None,
            "resources": {"total": 0, "byKind": {}, "bySync": {}, "byHealth": {}},
        }
    return {
        "lastPlannedRevision": status.last_planned_revision,
        "lastPlannedAt": when(status.last_planned_at),
        "lastPlanId": status.last_plan_id,
        "lastAppliedRevision": status.last_applied_revision,
        "lastAppliedAt": when(status.last_applied_at),
        "lastApplyId": status.last_apply_id,
        "resources": {
            "total": status.resources,
            "byKind": status.by_kind,
            "bySync": status.by_sync,
            "byHealth": status.by_health,
        },
    }


def event(item: Event) -> dict[str, Any]:
    return {
        "id": item.id,
        "at": when(item.at),
        "type": item.type,
        "planId": item.plan_id,
        "applyId": item.apply_id,
        "address": item.address,
        "payload": item.payload,
    }
