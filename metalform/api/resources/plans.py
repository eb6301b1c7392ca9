"""Plans: create (queued on the workers), read (JSON or rendered), apply."""

from __future__ import annotations

import re

import falcon
from pydantic import BaseModel, ConfigDict, Field

from metalform.api import serialize
from metalform.api.auth import who
from metalform.api.body import json_object
from metalform.api.errors import InvalidRequest
from metalform.server.config import Role
from metalform.server.control import ControlPlane
from metalform.store import ConflictError, RunStatus, Trigger
from reconciler.model import Plan
from reconciler.render import RENDERERS

# fullmatch: `$` would accept a trailing newline; no control characters (C0, DEL, C1)
_REF = re.compile(r"(?!-)(?!.*\.\.)(?!.*@\{)[^\x00-\x20\x7f-\x9f~^:?*\[\\]{1,255}")
_CONTENT_TYPES = {
    "markdown": "text/markdown; charset=utf-8",
    "text": "text/plain; charset=utf-8",
    "json": "application/json",
}


class PlanRequest(BaseModel):
    """Body of `POST /api/v1/plans`."""

    model_config = ConfigDict(extra="forbid")

    revision: str | None = Field(default=None, max_length=255)
    """A branch, tag or commit of the tracked repository; default: the tracked branch."""


_RUN_STATUS = {s.value: s for s in RunStatus}
LIST_LIMIT_DEFAULT = 20


def run_status(req: falcon.Request) -> RunStatus | None:
    """The `status` filter of a listing."""
    value = req.get_param("status")
    if value is None:
        return None
    if value not in _RUN_STATUS:
        raise InvalidRequest(f"status must be one of {', '.join(_RUN_STATUS)}", {"field": "status"})
    return _RUN_STATUS[value]


def page_limit(req: falcon.Request) -> int:
    return req.get_param_as_int("limit", min_value=1, max_value=500) or LIST_LIMIT_DEFAULT


class Plans:
    """`GET /api/v1/plans[?status=&pullRequest=&limit=&before=]`, `POST /api/v1/plans`."""

    roles = {"GET": Role.VIEWER, "POST": Role.PLANNER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = page_limit(req)
        page = self.service.store.list_plans(
            repository=self.service.repository,
            status=run_status(req),
            pull_request=req.get_param("pullRequest"),
            limit=limit,
            before=req.get_param("before"),
        )
        resp.media = {
            "items": [serialize.plan(r) for r in page.items],
            "nextBefore": page.next_before,
        }
        if page.next_before:
            resp.append_link(f"/api/v1/plans?limit={limit}&before={page.next_before}", "next")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        request = PlanRequest.model_validate(json_object(req))
        if request.revision is not None and not _REF.fullmatch(request.revision):
            raise InvalidRequest("revision is not a valid Git revision", {"field": "revision"})
        record = self.service.request_plan(request.revision, trigger=Trigger.API, who=who(req))
        resp.status = falcon.HTTP_202
        resp.set_header("Location", f"/api/v1/plans/{record.id}")
        resp.media = {"id": record.id, "status": record.status.value}


class PlanItem:
    """`GET /api/v1/plans/{id}` (`?format=markdown|text|json`)."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        record = self.service.store.get_plan(id)
        fmt = req.get_param("format")
        if fmt is None:
            resp.media = serialize.plan(record, with_document=True)
            return
        if fmt not in RENDERERS:
            raise InvalidRequest(
                f"format must be one of {', '.join(sorted(RENDERERS))}", {"field": "format"}
            )
        if record.status in (RunStatus.FAILED, RunStatus.INTERRUPTED):
            # it will never have a plan to render: say why, as text, whatever was asked
            resp.content_type = _CONTENT_TYPES["text"]
            resp.text = f"Plan {record.id} {record.status.value}:\n{record.error}\n"
            return
        plan = record.plan()
        if plan is None:
            raise ConflictError(
                f"plan {record.id} is {record.status.value}; there is nothing to render yet"
            )
        resp.content_type = _CONTENT_TYPES[fmt]
        resp.text = RENDERERS[fmt](Plan.model_validate(plan))


class PlanApply:
    """`POST /api/v1/plans/{id}/apply`."""

    roles = {"POST": Role.OPERATOR}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        applied = self.service.request_apply(id, trigger=Trigger.API, who=who(req))
        resp.status = falcon.HTTP_202
        resp.set_header("Location", f"/api/v1/applies/{applied.id}")
        resp.media = {"applyId": applied.id, "status": applied.status.value}
