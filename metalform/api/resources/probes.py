"""Open endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import time

import falcon

from metalform.server.control import ControlPlane
from metalform.server.metrics import CONTENT_TYPE


class Health:
    """`GET /healthz`: the process answers."""

    open = True

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}


class Ready:
    """`GET /readyz`: the database answers and the repository was fetched."""

    open = True

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        checks: dict[str, dict[str, object]] = {}
        started = time.monotonic()
        try:
            self.service.store.ping()
            checks["database"] = {"ok": True, "seconds": round(time.monotonic() - started, 4)}
        except Exception as exc:  # any driver error means "not ready", never a 500
            checks["database"] = {"ok": False, "error": type(exc).__name__}
        ok, detail = self.service.tracker.reachable()
        checks["repository"] = {"ok": ok, "detail": detail}
        ready = all(bool(c["ok"]) for c in checks.values())
        resp.status = falcon.HTTP_200 if ready else falcon.HTTP_503
        resp.media = {"status": "ready" if ready else "not ready", "checks": checks}


class Metrics:
    """`GET /metrics`: the Prometheus text format."""

    open = True

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = CONTENT_TYPE
        resp.data = self.service.metrics.render()
