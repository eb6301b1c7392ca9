"""The repository's status, its resources, and the history of plans and applies."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import falcon

from metalform.api import serialize
from metalform.api.errors import InvalidRequest
from metalform.server.config import Role, redact_url
from metalform.server.control import ControlPlane
from metalform.server.durations import format_duration
from metalform.store import NotFoundError
from reconciler.model import Health, SyncStatus

_SYNC = {s.value: s for s in SyncStatus}
_HEALTH = {h.value: h for h in Health}


def _epoch(value: float | None) -> str | None:
    return datetime.fromtimestamp(value, UTC).isoformat() if value is not None else None


class Status:
    """`GET /api/v1/status`: last planned and applied revision, drift, per-kind counts.

    Dashboards poll this; the answer is cached until something it shows changes here (an
    event, a fetch, a job starting or ending) and for at most `CACHE_SECONDS`, which bounds how
    late changes made by another replica sharing the database show up.
    """

    roles = {"GET": Role.VIEWER}
    CACHE_SECONDS = 1.0

    def __init__(self, service: ControlPlane) -> None:
        self.service = service
        self._cached: tuple[object, float, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        service = self.service
        key = (
            service.version,
            service.tracker.last_fetch,
            service.workers.in_flight,
            id(service.drift),
        )
        with self._lock:
            cached = self._cached
        if (
            cached is not None
            and cached[0] == key
            and time.monotonic() - cached[1] < self.CACHE_SECONDS
        ):
            resp.media = cached[2]
            return
        body = self._body()
        with self._lock:
            self._cached = (key, time.monotonic(), body)
        resp.media = body

    def _body(self) -> dict[str, Any]:
        service = self.service
        config = service.config
        repo = service.store.repository_status(service.repository)
        fetch = service.tracker.last_fetch
        drift = service.drift
        body: dict[str, Any] = {
            "repository": {
                "url": redact_url(config.repository_url),
                "branch": config.branch,
                "path": config.path,
                "head": fetch.head if fetch else None,
                "fetchedAt": _epoch(fetch.at) if fetch else None,
                "fetchError": fetch.error if fetch else None,
            },
            **serialize.repository(repo),
            "drift": {
                "resources": repo.drift if repo else 0,
                "interval": format_duration(config.drift_interval),
                "lastCheckAt": _epoch(drift.checked_at),
                "lastCheckPlanId": drift.plan_id,
                "detected": bool(drift.drifted),
                "addresses": drift.drifted,
                "error": drift.error,
            },
            "autoApply": config.auto_apply,
            "jobsInFlight": service.workers.in_flight,
        }
        return body


class Resources:
    """`GET /api/v1/resources[?kind=&label=k=v&status=]`."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        labels: dict[str, str | None] = {}
        for item in req.get_param_as_list("label") or []:
            key, sep, value = item.partition("=")
            if not key:
                raise InvalidRequest("label filters are KEY or KEY=VALUE", {"field": "label"})
            labels[key] = value if sep else None
        sync: list[SyncStatus] = []
        health: list[Health] = []
        for value in req.get_param_as_list("status") or []:
            if value in _SYNC:
                sync.append(_SYNC[value])
            elif value in _HEALTH:
                health.append(_HEALTH[value])
            else:
                known = ", ".join([*_SYNC, *_HEALTH])
                raise InvalidRequest(
                    f"unknown status {value!r} (known: {known})", {"field": "status"}
                )
        items = self.service.store.list_resource_status(
            self.service.repository,
            kind=req.get_param("kind"),
            labels=labels,
            sync=sync or None,
            health=health or None,
        )
        resp.media = {"items": [serialize.resource(r) for r in items], "count": len(items)}


class ResourceItem:
    """`GET /api/v1/resources/{kind}/{name}`: status and what the last plan says of it."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, kind: str, name: str) -> None:
        store = self.service.store
        address = f"{kind}/{name}"
        status = store.get_resource_status(self.service.repository, address)
        if status is None:
            raise NotFoundError(what="resource", id=address)
        body = serialize.resource(status)
        repo = store.repository_status(self.service.repository)
        if repo is not None and repo.last_plan_id is not None:
            document = store.get_plan(repo.last_plan_id).document or {}
            body["lastPlan"] = {
                "id": repo.last_plan_id,
                "change": next(
                    (c for c in document.get("changes", []) if c.get("address") == address), None
                ),
                "actions": [a for a in document.get("actions", []) if a.get("address") == address],
            }
        resp.media = body


class History:
    """`GET /api/v1/history[?limit=&before=]`: plans, applies and rotations, newest first."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=500) or 20
        page = self.service.store.list_history(
            repository=self.service.repository, limit=limit, before=req.get_param("before")
        )
        items = [serialize.history_item(r) for r in page.items]
        resp.media = {"items": items, "nextBefore": page.next_before}
        if page.next_before:
            resp.append_link(f"/api/v1/history?limit={limit}&before={page.next_before}", "next")
