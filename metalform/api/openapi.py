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


STRING: dict[str, Any] = {"type": "string"}


@dataclass(frozen=True)
class Operation:
    """One documented operation: what it answers on success, its query and body schemas."""

    summary: str
    status: int = 200
    content_type: str = "application/json"
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Query parameter name -> JSON schema (all optional)."""
    body: dict[str, Any] | None = None
    response: dict[str, Any] = field(default_factory=dict)
    """The JSON schema of the success body (`{}`: any)."""
    other_types: tuple[str, ...] = ()
    """Other content types of the success body (a plan rendered as text, ...)."""
    other_statuses: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Statuses besides `status` whose body is not the error shape -> their JSON schema."""


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
    params += [
        {"name": name, "in": "query", "required": False, "schema": schema}
        for name, schema in op.query.items()
    ]
    content = {op.content_type: {"schema": op.response}}
    content.update({other: {"schema": STRING} for other in op.other_types})
    responses: dict[str, Any] = {str(op.status): {"description": op.summary, "content": content}}
    for status, schema in op.other_statuses.items():
        responses[str(status)] = {
            "description": op.summary,
            "content": {op.content_type: {"schema": schema}},
        }
    responses["default"] = _ERROR
    description = "" if is_open else f"Needs a bearer token with role {roles[method].value}."
    path = _PARAM.sub(lambda m: m.group(1).title(), route.path)
    body: dict[str, Any] = {
        "operationId": f"{method.lower()}{path}".replace("/", "_").replace("-", "_"),
        "summary": op.summary,
        "description": description,
        "parameters": params,
        "responses": responses,
    }
    if op.body is not None:
        body["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": op.body}},
        }
    body["security"] = [] if is_open else [{"bearer": []}]
    return body


def build(routes: Sequence[Route]) -> dict[str, Any]:
    """The OpenAPI document of `routes`."""
    paths: dict[str, Any] = {}
    for route in routes:
        template = _PARAM.sub(lambda m: "{" + m.group(1) + "}", route.path)
        paths[template] = {
            method.lower(): _operation(route, method, op) for method, op in route.operations.items()
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Metalform",
            "version": __version__,
            "description": "Plan and apply bare-metal desired state from Git.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "details": {"type": "object"},
                            },
                        }
                    },
                }
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                }
            },
        },
    }


class OpenApi:
    """`GET /openapi.json`."""

    open = True

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document
