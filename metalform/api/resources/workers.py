"""`GET /api/v1/workers`: the site workers, per site (last heartbeat, tasks in flight)."""

from __future__ import annotations

from typing import Any

import falcon

from metalform.server.config import Role
from metalform.server.control import ControlPlane
from reconciler.errors import MetalformError
from reconciler.secrets import REDACTOR


class Workers:
    """Live workers per site, from their heartbeats; `configured: false` without a broker."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        router: Any = self.service.engine.route
        if router is None or not hasattr(router, "overview"):
            resp.media = {"configured": False, "sites": []}
            return
        try:
            sites = router.overview()
        except MetalformError as exc:  # the broker down: an answer about the workers
            resp.media = {"configured": True, "sites": [], "error": REDACTOR(str(exc))}
            return
        except Exception as exc:  # never a 500 for it either, nor an unexpected text
            resp.media = {"configured": True, "sites": [], "error": type(exc).__name__}
            return
        resp.media = {"configured": True, "sites": sites}
