"""`console_routes`: the console's pages and its static files, added to the app by
`metalform.api.create_app` (outside the OpenAPI document: they answer HTML, not the API)."""

from __future__ import annotations

from importlib.resources import files

import falcon

from metalform.api.auth import Authenticator
from metalform.console.base import Console
from metalform.console.pages import pages
from metalform.console.sessions import Sessions
from metalform.server.control import ControlPlane

_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}


class Static:
    """`GET /static/{name}`: the packaged styles and scripts (read once, kept in memory)."""

    open = True

    def __init__(self) -> None:
        folder = files("metalform.console") / "static"
        self.files = {
            item.name: item.read_bytes()
            for item in folder.iterdir()
            if item.is_file() and any(item.name.endswith(ext) for ext in _TYPES)
        }

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        data = self.files.get(name)
        if data is None:
            raise falcon.HTTPNotFound()
        resp.content_type = _TYPES[name[name.rindex(".") :]]
        resp.set_header("Cache-Control", "public, max-age=3600")
        resp.data = data


def console_routes(
    service: ControlPlane, sessions: Sessions, authenticator: Authenticator
) -> dict[str, object]:
    """Path -> resource for every console route."""
    console = Console(service, sessions, authenticator)
    return {**pages(console), "/static/{name}": Static()}
