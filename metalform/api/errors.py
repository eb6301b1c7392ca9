"""JSON errors: `{"error": {"code", "message", "details"}}`, from one error handler.

Every exception a resource lets out comes here: Falcon's own HTTP errors (404 route, 405),
the API's (auth, bad query), webhook refusals and the domain's `MetalformError`s, mapped to a
status by type. Anything unexpected is a 500 whose message says nothing about the internals;
its traceback goes to the log (scrubbed of secrets by the log filter).
"""

from __future__ import annotations

import logging
from typing import Any

import falcon
from pydantic import ValidationError

from metalform.server.control import ApplyInProgress, PlanNotApplicable
from metalform.server.jobs import ShuttingDown
from metalform.server.repository import RepositoryUnavailable
from metalform.store import ConflictError, NotFoundError, StoreError
from reconciler.errors import InputError, MetalformError, StalePlanError
from reconciler.secrets import REDACTOR
from webhooks import WebhookError

log = logging.getLogger("metalform.api")

HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    411: "LENGTH_REQUIRED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    500: "INTERNAL_ERROR",
    503: "UNAVAILABLE",
}


class ApiError(MetalformError):
    """An error the API raises itself, with its status, code and details."""

    status = 400
    code = "BAD_REQUEST"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.details = details or {}
        self.headers = headers or {}


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"

    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="metalform"'})


class Forbidden(ApiError):
    status, code = 403, "FORBIDDEN"


class NotConfigured(ApiError):
    status, code = 404, "NOT_CONFIGURED"


class InvalidRequest(ApiError):
    status, code = 422, "VALIDATION_ERROR"


# (type, status, code), most specific first: the first match wins
_DOMAIN: tuple[tuple[type[Exception], int, str], ...] = (
    (NotFoundError, 404, "NOT_FOUND"),
    (StalePlanError, 409, "STALE_PLAN"),
    (ApplyInProgress, 409, "APPLY_IN_PROGRESS"),
    (PlanNotApplicable, 409, "PLAN_NOT_APPLICABLE"),
    (ConflictError, 409, "CONFLICT"),
    (InputError, 422, "VALIDATION_ERROR"),
    (RepositoryUnavailable, 503, "REPOSITORY_UNAVAILABLE"),
    (ShuttingDown, 503, "SHUTTING_DOWN"),
    (StoreError, 400, "BAD_REQUEST"),
    (MetalformError, 400, "BAD_REQUEST"),
)


def _validation_details(exc: ValidationError) -> dict[str, Any]:
    # never echo the input: it may hold a secret pasted in the wrong place
    return {
        "errors": [
            {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors(include_input=False, include_url=False)
        ]
    }


def describe(ex: Exception) -> tuple[int, str, str, dict[str, Any], dict[str, str]]:
    """(status, code, message, details, headers) of an exception."""
    if isinstance(ex, falcon.HTTPError):
        status = ex.status_code
        message = ex.description or ex.title or HTTP_CODES.get(status, "error")
        headers = dict(ex.headers or {})
        return status, HTTP_CODES.get(status, "HTTP_ERROR"), message, {}, headers
    if isinstance(ex, ApiError):
        return ex.status, ex.code, str(ex), ex.details, ex.headers
    if isinstance(ex, WebhookError):
        return ex.http_status, ex.code, str(ex), {}, {}
    if isinstance(ex, ValidationError):
        return 422, "VALIDATION_ERROR", "the request body is invalid", _validation_details(ex), {}
    for kind, status, code in _DOMAIN:
        if isinstance(ex, kind):
            details: dict[str, Any] = {}
            if isinstance(ex, InputError):
                details["diagnostics"] = [d.render() for d in ex.diagnostics]
            return status, code, str(ex), details, {}
    return 500, "INTERNAL_ERROR", "internal error; the server log has the details", {}, {}


def handle_error(
    req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    """The one error handler of the app (registered for every exception)."""
    status, code, message, details, headers = describe(ex)
    if status >= 500 and code == "INTERNAL_ERROR":
        log.error("%s %s failed", req.method, req.path, exc_info=ex)
    resp.status = status
    for name, value in headers.items():
        resp.set_header(name, value)
    resp.media = {"error": {"code": code, "message": REDACTOR(message), "details": details}}
    # a half-built response (a stream, a rendered plan) must not go out with the error
    resp.stream = None
    resp.content_type = falcon.MEDIA_JSON
