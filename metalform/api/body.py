"""Request bodies: a size limit per route, checked before reading; JSON of bounded depth.

Every resource may declare `max_body` (bytes); the default suits the JSON routes, whose
bodies are a few fields. `BodyLimit` runs after the token check (`AuthMiddleware`) and before
the responder, so an unauthenticated client is refused before its body is read, and an
announced `Content-Length` over the limit is refused with 413 without reading a byte. A body
of unknown length is read to at most the limit plus one byte.

JSON bodies are parsed whatever their Content-Type (curl's `-d` sends form data), after a
check of their nesting depth: the parser recurses once per level.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import falcon

from metalform.api.errors import ApiError, InvalidRequest

DEFAULT_MAX_BODY = 4 * 1024
"""The JSON routes take a few short fields (a revision name); 4 KiB leaves room."""
MAX_JSON_DEPTH = 32
"""Deeper than any body the API takes; far below the parser's recursion limit."""

# A JSON string (skipped whole, so brackets inside it do not count), or a bracket.
_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', re.DOTALL)


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class BadBody(ApiError):
    status, code = 400, "BAD_REQUEST"


def limit_of(resource: object) -> int:
    """The largest body `resource` accepts."""
    return int(getattr(resource, "max_body", DEFAULT_MAX_BODY))


def largest_limit(resources: Iterable[object]) -> int:
    """The largest body any of `resources` accepts: all the HTTP server needs to buffer."""
    return max((limit_of(r) for r in resources), default=DEFAULT_MAX_BODY)


class BodyLimit:
    """Refuses a body announced larger than the route's limit, before anything reads it.

    Resources that read and refuse their body themselves (`checks_own_body`: the webhooks,
    which record every refusal as an event) are left to do so.
    """

    def process_resource(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None or getattr(resource, "checks_own_body", False):
            return
        limit = limit_of(resource)
        length = req.content_length  # an invalid Content-Length is a 400 from Falcon
        if length is not None and length > limit:
            raise PayloadTooLarge(
                f"the body is {length} bytes; this route takes at most {limit}", {"limit": limit}
            )
        req.context.max_body = limit


def read_body(req: falcon.Request) -> bytes:
    """The request's body, never more than the route's limit (whatever was announced)."""
    limit: int = getattr(req.context, "max_body", DEFAULT_MAX_BODY)
    data: bytes = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"the body is larger than {limit} bytes, the most this route takes", {"limit": limit}
        )
    return data


def json_depth(data: bytes) -> int:
    """How deep arrays and objects nest in `data` (JSON text), without parsing it."""
    depth = deepest = 0
    for match in _TOKEN.finditer(data):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def loads(data: bytes) -> Any:
    """Parse a JSON body: UTF-8, at most `MAX_JSON_DEPTH` levels deep, else a 400."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadBody(f"the body is not UTF-8 (byte {exc.start})") from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BadBody(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadBody(
            f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:  # a second guard, should the scan above ever undercount
        raise BadBody("the JSON body is nested too deeply") from None


def json_object(req: falcon.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}`."""
    data = read_body(req)
    if not data.strip():
        return {}
    body = loads(data)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body
