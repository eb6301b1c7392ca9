"""The console's pages: overview, resources, plans, applies, history, webhook deliveries."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import falcon

from metalform.console.base import Console, FormPage, Page, form
from metalform.console.plan_view import apply_summary, plan_view
from metalform.console.sessions import COOKIE, LOGIN_COOKIE, Session, same
from metalform.server.config import Role
from metalform.store import NotFoundError, PlanRecord, RunStatus, Trigger, queries
from reconciler.errors import MetalformError
from reconciler.model import Health, SyncStatus
from reconciler.model.events import EventType

log = logging.getLogger("metalform.console")

PAGE_SIZE = 50
_SYNC = {s.value: s for s in SyncStatus}
_HEALTH = {h.value: h for h in Health}
_RUN = {s.value: s for s in RunStatus}


def _cookie(req: falcon.Request, name: str) -> str | None:
    values = req.get_cookie_values(name)
    return values[0] if values else None


def _run_status(value: str | None) -> RunStatus | None:
    return _RUN.get(value or "")


class Root(Page):
    """`GET /`: the sign-in form without a session, the overview with one."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        if self.console.sessions.of(req) is None:
            self.console.login_form(resp)
            return
        super().on_get(req, resp, **params)

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        service = self.console.service
        store = service.store
        repo = store.repository_status(service.repository)
        running = store.list_applies(repository=service.repository, status=RunStatus.RUNNING)
        pending = store.list_applies(repository=service.repository, status=RunStatus.PENDING)
        drift = service.drift
        self.console.render(
            resp,
            "overview.html",
            session,
            repo=repo,
            running=[*running.items, *pending.items],
            drift=drift,
            fetch=service.tracker.last_fetch,
            branch=service.config.branch,
            recent=store.list_history(repository=service.repository, limit=5).items,
            sync_values=[s.value for s in SyncStatus],
            health_values=[h.value for h in Health],
        )


class Login(Page):
    """`POST /login`: a token for a session cookie. The token is checked and forgotten."""

    def on_get(self, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
        raise falcon.HTTPSeeOther("/")

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        sessions = self.console.sessions
        address = req.remote_addr or "unknown"
        wait = sessions.refused_for(address)
        if wait is not None:
            log.warning("console sign-in refused: too many failures from %s", address)
            resp.set_header("Retry-After", str(math.ceil(wait)))
            self.console.login_form(
                resp,
                f"Too many failed sign-ins from your address; try again in {math.ceil(wait)} s.",
                status=429,
            )
            return
        fields = form(req)
        nonce = _cookie(req, LOGIN_COOKIE)
        if nonce is None or not same(fields.get("nonce"), nonce):
            self.console.login_form(resp, "The sign-in form expired; please try again.")
            return
        try:
            principal = self.console.authenticator.token(fields.get("token", ""))
        except MetalformError:
            sessions.failed(address)
            self.console.login_form(resp, "That token is not valid.")
            return
        session_id, _ = sessions.create(principal)
        sessions.set_cookie(resp, COOKIE, session_id, max_age=int(sessions.lifetime))
        sessions.clear_cookie(resp, LOGIN_COOKIE)
        raise falcon.HTTPSeeOther("/")


class Logout(FormPage):
    """`POST /logout`: ends the session (any role may)."""

    posts = Role.VIEWER

    def post(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        sessions = self.console.sessions
        sessions.end(_cookie(req, COOKIE))
        sessions.clear_cookie(resp, COOKIE)
        raise falcon.HTTPSeeOther("/")


class Resources(Page):
    """`GET /resources?kind=&label=&sync=&health=&q=&page=`."""

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        service = self.console.service
        labels: dict[str, str | None] = {}
        for item in req.get_param_as_list("label") or []:
            key, sep, value = item.strip().partition("=")
            if key:
                labels[key] = value if sep else None
        sync = [_SYNC[v] for v in req.get_param_as_list("sync") or [] if v in _SYNC]
        health = [_HEALTH[v] for v in req.get_param_as_list("health") or [] if v in _HEALTH]
        number = req.get_param_as_int("page", min_value=1, max_value=1_000_000) or 1
        text = (req.get_param("q") or "").strip()[:200]
        kind = req.get_param("kind") or None
        page = queries.resource_page(
            service.store,
            service.repository,
            kind=kind,
            labels=labels,
            sync=sync,
            health=health,
            text=text or None,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
        )
        params = {
            "kind": kind,
            "label": ",".join(f"{k}={v}" if v is not None else k for k, v in labels.items()),
            "sync": [s.value for s in sync],
            "health": [h.value for h in health],
            "q": text,
        }
        self.console.render(
            resp,
            "resources.html",
            session,
            page=page,
            number=number,
            pages=max(1, -(-page.total // PAGE_SIZE)),
            params=params,
            kinds=queries.kinds(service.store, service.repository),
            label_keys=queries.label_keys(service.store, service.repository),
            sync_values=[s.value for s in SyncStatus],
            health_values=[h.value for h in Health],
        )


class ResourceItem(Page):
    """`GET /resources/{kind}/{name}`: desired, live and pending values, actions, events."""

    def get(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        session: Session,
        kind: str = "",
        name: str = "",
        **kw: Any,
    ) -> None:
        service = self.console.service
        address = f"{kind}/{name}"
        status = service.store.get_resource_status(service.repository, address)
        if status is None:
            raise NotFoundError(what="resource", id=address)
        repo = service.store.repository_status(service.repository)
        change = None
        actions: list[dict[str, Any]] = []
        plan_id = repo.last_plan_id if repo else None
        if plan_id is not None:
            document = service.store.get_plan(plan_id).document or {}
            change = next(
                (c for c in document.get("changes", []) if c.get("address") == address), None
            )
            actions = [a for a in document.get("actions", []) if a.get("address") == address]
        self.console.render(
            resp,
            "resource.html",
            session,
            status=status,
            change=change,
            actions=actions,
            plan_id=plan_id,
            events=queries.events_of(service.store, service.repository, address),
        )


def _run_list(
    console: Any,
    req: falcon.Request,
    resp: falcon.Response,
    session: Session,
    lister: Callable[..., Any],
    template: str,
) -> None:
    """A page of plans or applies of the repository, filtered by status (`?status=&before=`)."""
    status = _run_status(req.get_param("status"))
    page = lister(
        repository=console.service.repository,
        status=status,
        limit=PAGE_SIZE,
        before=req.get_param("before"),
    )
    console.render(
        resp,
        template,
        session,
        page=page,
        status=status.value if status else "",
        statuses=list(_RUN),
    )


class Plans(Page):
    """`GET /plans?status=&before=`."""

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        _run_list(
            self.console, req, resp, session, self.console.service.store.list_plans, "plans.html"
        )


def _applicable(record: PlanRecord) -> bool:
    return record.status is RunStatus.SUCCEEDED and record.action_count > 0


class PlanItem(Page):
    """`GET /plans/{id}`: the plan as the pull-request comment shows it."""

    def get(
        self, req: falcon.Request, resp: falcon.Response, session: Session, id: str = "", **kw: Any
    ) -> None:
        store = self.console.service.store
        record = store.get_plan(id)
        plan = record.plan()
        self.console.render(
            resp,
            "plan.html",
            session,
            record=record,
            view=plan_view(plan) if plan is not None else None,
            applies=store.list_applies(plan_id=record.id, limit=10).items,
            applicable=_applicable(record),
        )


class PlanApply(FormPage):
    """`GET /plans/{id}/apply`: the confirmation page, naming what is disruptive;
    `POST` (operator, CSRF token): start the apply and follow it."""

    needs = Role.OPERATOR

    def get(
        self, req: falcon.Request, resp: falcon.Response, session: Session, id: str = "", **kw: Any
    ) -> None:
        record = self.console.service.store.get_plan(id)
        plan = record.plan()
        if plan is None or not _applicable(record):
            raise NotFoundError(what="applicable plan", id=id)
        self.console.render(resp, "confirm.html", session, record=record, view=plan_view(plan))

    def post(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        session: Session,
        id: str = "",
        **kw: Any,
    ) -> None:
        applied = self.console.service.request_apply(
            id, trigger=Trigger.API, who=session.principal.name
        )
        raise falcon.HTTPSeeOther(f"/applies/{applied.id}")


class Applies(Page):
    """`GET /applies?status=&before=`."""

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        _run_list(
            self.console,
            req,
            resp,
            session,
            self.console.service.store.list_applies,
            "applies.html",
        )


class ApplyItem(Page):
    """`GET /applies/{id}`: every action's progress, updated live by `static/apply.js`."""

    def get(
        self, req: falcon.Request, resp: falcon.Response, session: Session, id: str = "", **kw: Any
    ) -> None:
        record = self.console.service.store.get_apply(id)
        self.console.render(
            resp,
            "apply.html",
            session,
            record=record,
            summary=apply_summary(record),
            last_event=self.console.service.store.last_event_id(),
        )


class History(Page):
    """`GET /history?before=`: plans and applies, newest first."""

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        service = self.console.service
        page = service.store.list_history(
            repository=service.repository, limit=PAGE_SIZE, before=req.get_param("before")
        )
        self.console.render(resp, "history.html", session, page=page)


class Deliveries(Page):
    """`GET /deliveries`: webhook deliveries, verified or not, and what they started."""

    def get(self, req: falcon.Request, resp: falcon.Response, session: Session, **kw: Any) -> None:
        store = self.console.service.store
        rejected = queries.recent_events(store, EventType.WEBHOOK_REJECTED.value, limit=50)
        self.console.render(
            resp,
            "deliveries.html",
            session,
            deliveries=queries.list_deliveries(store, limit=PAGE_SIZE),
            rejected=rejected,
        )


def pages(console: Console) -> dict[str, Page]:
    """The console's routes."""
    return {
        "/": Root(console),
        "/login": Login(console),
        "/logout": Logout(console),
        "/resources": Resources(console),
        "/resources/{kind}/{name}": ResourceItem(console),
        "/plans": Plans(console),
        "/plans/{id}": PlanItem(console),
        "/plans/{id}/apply": PlanApply(console),
        "/applies": Applies(console),
        "/applies/{id}": ApplyItem(console),
        "/history": History(console),
        "/deliveries": Deliveries(console),
    }
