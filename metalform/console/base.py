"""What every console page shares: the templates, the session check, CSRF, error pages."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import falcon
from jinja2 import Environment, PackageLoader, select_autoescape

from metalform.api.auth import Authenticator, Principal
from metalform.api.body import read_body
from metalform.console.sessions import LOGIN_COOKIE, Session, Sessions, same
from metalform.server.config import Role
from metalform.server.control import ControlPlane
from metalform.store import ConflictError, NotFoundError
from reconciler.errors import MetalformError, StalePlanError
from reconciler.secrets import REDACTOR

HTML = "text/html; charset=utf-8"
MAX_FORM_BYTES = 4 * 1024


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else ""


def _short(value: str | None, size: int = 12) -> str:
    return (value or "")[:size]


def _ident(value: str | None) -> str:
    """An id for people: ids are time-ordered UUIDs, so their head is the time; show the
    tail too, which tells two of the same moment apart."""
    text = value or ""
    return f"{text[:8]}…{text[-4:]}" if len(text) > 12 else text


def _query(params: dict[str, Any], **changes: Any) -> str:
    """The page's query string with `changes`, for pagination and filter links."""
    merged = {**params, **changes}
    return urlencode([(k, v) for k, v in merged.items() if v not in (None, "", [])], doseq=True)


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("metalform.console", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["short"] = _short
    env.filters["ident"] = _ident
    env.globals["query"] = _query
    return env


class Denied(MetalformError):
    """A console request its session may not make (no session, wrong role, bad CSRF)."""

    def __init__(self, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


_STATUS = {NotFoundError: 404, ConflictError: 409, StalePlanError: 409}


class Console:
    """The console's shared parts, handed to every page."""

    def __init__(
        self, service: ControlPlane, sessions: Sessions, authenticator: Authenticator
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.authenticator = authenticator
        self.env = environment()

    def render(
        self,
        resp: falcon.Response,
        template: str,
        session: Session | None,
        http_status: int = 200,
        **context: Any,
    ) -> None:
        resp.status = http_status
        resp.content_type = HTML
        resp.set_header("Cache-Control", "no-store")
        principal: Principal | None = session.principal if session else None
        resp.text = REDACTOR(
            self.env.get_template(template).render(
                session=session,
                user=principal,
                operator=principal is not None and principal.role.allows(Role.OPERATOR),
                **context,
            )
        )

    def login_form(
        self, resp: falcon.Response, error: str | None = None, status: int | None = None
    ) -> None:
        nonce = secrets.token_urlsafe(24)
        self.sessions.set_cookie(resp, LOGIN_COOKIE, nonce, max_age=600)
        code = status or (401 if error else 200)
        self.render(resp, "login.html", None, http_status=code, nonce=nonce, error=error)


def form(req: falcon.Request) -> dict[str, str]:
    """An urlencoded form body (bounded), the first value of each field."""
    body = read_body(req).decode("utf-8", errors="replace")
    values = falcon.uri.parse_query_string(body, keep_blank=True)
    return {k: (v[0] if isinstance(v, list) else v) for k, v in values.items()}


class Page:
    """A console page: `get`/`post` run with the session; failures become HTML pages."""

    open = True  # the API's token check is skipped: the session is checked here
    max_body = MAX_FORM_BYTES
    needs = Role.VIEWER

    def __init__(self, console: Console) -> None:
        self.console = console

    def session(self, req: falcon.Request, needs: Role) -> Session:
        session = self.console.sessions.of(req)
        if session is None:
            raise falcon.HTTPSeeOther("/")
        if not session.principal.role.allows(needs):
            raise Denied(
                f"{session.principal.name} has role {session.principal.role.value}; "
                f"this needs {needs.value}"
            )
        return session

    def _run(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        step: Callable[..., None],
        needs: Role,
        params: dict[str, Any],
        csrf: bool,
    ) -> None:
        session = None
        try:
            session = self.session(req, needs)
            if csrf:
                fields = form(req)
                if not same(fields.get("csrf"), session.csrf):
                    raise Denied("the form's CSRF token is missing or wrong; reload the page")
                params = {**params, "fields": fields}
            step(req, resp, session, **params)
        except Denied as exc:
            self.console.render(resp, "error.html", session, http_status=exc.status, error=str(exc))
        except MetalformError as exc:
            status = next((s for t, s in _STATUS.items() if isinstance(exc, t)), 400)
            self.console.render(resp, "error.html", session, http_status=status, error=str(exc))

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        self._run(req, resp, self.get, self.needs, params, csrf=False)

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        raise falcon.HTTPMethodNotAllowed(["POST"])


class FormPage(Page):
    """A page that takes a form post: the session's CSRF token must come with it."""

    posts = Role.OPERATOR

    def on_post(self, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        self._run(req, resp, self.post, self.posts, params, csrf=True)

    def post(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        raise NotImplementedError
