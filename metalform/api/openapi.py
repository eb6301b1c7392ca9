"""The OpenAPI 3.1 document, built from the app's own route table (so it cannot miss one)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import falcon

from reconciler import __version__

_PARAM = re.compile(r"{(\w+)(?::[^}]*)?}")
_ERROR = {"$ref": "#/components/responses/Error"}


@dataclass(frozen=True)
class Operation:
    summary: str
    status: int = 200
    content_type: str = "application/json"
    query: tuple[str, ...] = ()
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Route:
    """One route of the app: its URI template, resource and documented operations."""

    path: str
    resource: object
    operations: dict[str, Operation] = field(default_factory=dict)


def _operation(route: Route, method: str, op: Operation) -> dict[str, Any]:
    resource = route.resource
    is_open = bool(getattr(resource, "open", False))
    roles = getattr(resource, "roles", {})
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PARAM.findall(route.path)
    ]
    params += [{"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
               for name in op.query]
    description = "" if is_open else f"Needs a bearer token with role {roles[method].value}."
    body: dict[str, Any] = {
        "operationId": f"{method.lower()}{_PARAM.sub(lambda m: m.group(1).title(), route.path)}"
        .replace("/", "_").replace("-", "_"),
        "summary": op.summary,
        "description": description,
        "parameters": params,
        "responses": {
            str(op.status): {"description": op.summary,
                             "content": {op.content_type: {"schema": {}}}},
            "default": _ERROR,
        },
    }
    if op.body is not None:
        body["requestBody"] = {"required": False,
                               "content": {"application/json": {"schema": op.body}}}
    body["security"] = [] if is_open else [{"bearer": []}]
    return body


def build(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    paths: dict[str, Any] = {}
    for route in routes:
        template = _PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        paths[template] = {method.lower(): _operation(route, method, op)
                           for method, op in route.operations.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Metalform", "version": __version__,
                 "description": "Plan and apply bare-metal desired state from Git."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {"type": "object", "required": ["code", "message"],
                                         "properties": {"code": {"type": "string"},
                                                        "message": {"type": "string"},
                                                        "details": {"type": "object"}}}}}},
            "responses": {"Error": {"description": "An error",
                                    "content": {"application/json": {
                                        "schema": {"$ref": "#/components/schemas/Error"}}}}},
        },
    }


class OpenApi:
    """`GET /openapi.json`."""

    open = True

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document
