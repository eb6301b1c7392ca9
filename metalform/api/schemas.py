"""JSON schemas of request and response bodies, for the OpenAPI document (`openapi.py`).

They say what the API answers and accepts, precisely enough for a fuzzer to check every
response against them (tests/api/test_openapi_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from reconciler.model import Health, SyncStatus

OBJECT: dict[str, Any] = {"type": "object"}
STRING_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}


def record(*required: str, **properties: dict[str, Any]) -> dict[str, Any]:
    """An object with `required` keys (any value unless given in `properties`)."""
    props: dict[str, Any] = {name: {} for name in required}
    props.update(properties)
    return {"type": "object", "required": list(required), "properties": props}


REVISION: dict[str, Any] = {
    # A conservative subset of what the API takes (see resources/plans.py `_REF`): names
    # made of words, `/`, `-` and single dots.
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_/-]*(\.[A-Za-z0-9_/-]+)*$",
}
PLAN_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"revision": REVISION},
}
HEALTH = record("status", status={"const": "ok"})
READINESS = record("status", "checks", status={"enum": ["ready", "not ready"]}, checks=OBJECT)
_WORKER = record(
    "hostname",
    "lastHeartbeat",
    "secondsSinceHeartbeat",
    "inFlight",
    hostname={"type": "string"},
    lastHeartbeat={"type": "number"},
    secondsSinceHeartbeat={"type": "number"},
    inFlight={"type": "integer"},
)
WORKERS = record(
    "configured",
    "sites",
    configured={"type": "boolean"},
    error={"type": "string"},
    sites={
        "type": "array",
        "items": record(
            "site",
            "queueDepth",
            "workers",
            site={"type": "string"},
            queueDepth={"type": "integer"},
            workers={"type": "array", "items": _WORKER},
        ),
    },
)
PLAN_CREATED = record("id", "status", id={"type": "string"}, status={"type": "string"})
APPLY_CREATED = record("applyId", "status", applyId={"type": "string"}, status={"type": "string"})
PLAN_RECORD = record(
    "type",
    "id",
    "status",
    "revision",
    type={"const": "plan"},
    id={"type": "string"},
    status={"type": "string"},
    revision=STRING_OR_NULL,
)
PLAN = {"anyOf": [PLAN_RECORD, record("actions", actions={"type": "array", "items": OBJECT})]}
"""The plan's record (no `format`), or the plan itself as `metalform plan --format json`
prints it (`?format=json`)."""
APPLY = record(
    "type",
    "id",
    "planId",
    "status",
    "actions",
    type={"const": "apply"},
    id={"type": "string"},
    planId={"type": "string"},
    status={"type": "string"},
    actions={"type": "array", "items": OBJECT},
)
STATUS = record(
    "repository", "drift", "resources", repository=OBJECT, drift=OBJECT, resources=OBJECT
)
RESOURCE = record(
    "address",
    "kind",
    "name",
    "sync",
    "health",
    sync={"enum": [s.value for s in SyncStatus]},
    health={"enum": [h.value for h in Health]},
)
RESOURCES = record(
    "items",
    "count",
    items={"type": "array", "items": RESOURCE},
    count={"type": "integer", "minimum": 0},
)
HISTORY = record(
    "items", "nextBefore", items={"type": "array", "items": OBJECT}, nextBefore=STRING_OR_NULL
)
RUN_STATUS: dict[str, Any] = {"enum": ["pending", "running", "succeeded", "failed", "interrupted"]}
PLAN_ITEM = record(
    "type",
    "id",
    "status",
    "trigger",
    type={"const": "plan"},
    id={"type": "string"},
    status=RUN_STATUS,
    trigger={"type": "string"},
)
APPLY_ITEM = record(
    "type",
    "id",
    "planId",
    "status",
    "counts",
    type={"const": "apply"},
    id={"type": "string"},
    planId={"type": "string"},
    status=RUN_STATUS,
    counts=OBJECT,
)
PLANS = record(
    "items", "nextBefore", items={"type": "array", "items": PLAN_ITEM}, nextBefore=STRING_OR_NULL
)
APPLIES = record(
    "items", "nextBefore", items={"type": "array", "items": APPLY_ITEM}, nextBefore=STRING_OR_NULL
)
DELIVERY = record("status", "delivery", status={"type": "string"}, delivery={"type": "string"})

PLAN_FORMAT: dict[str, Any] = {"enum": ["json", "markdown", "text"]}
RESOURCE_STATUS: dict[str, Any] = {
    "enum": [*(s.value for s in SyncStatus), *(h.value for h in Health)]
}
HISTORY_LIMIT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 500}
LABEL: dict[str, Any] = {"type": "string", "pattern": "^[^=,]+(=[^,]*)?$"}
"""`KEY` (has the label) or `KEY=VALUE`; several: `label=a,b=c` or `label=a&label=b=c`."""
EVENT_ID: dict[str, Any] = {"type": "string", "pattern": "^[0-9]{1,18}$"}
"""The id of the last event received (or the `Last-Event-ID` header)."""
CURSOR: dict[str, Any] = {"type": "string", "format": "uuid"}
"""`nextBefore` of the previous page: the id of its last item."""
