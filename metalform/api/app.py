"""`create_app(config, engine, store)`: the Falcon app of `metalform serve`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, cast

import falcon
import falcon.media

from metalform.api import schemas
from metalform.api.auth import Authenticator, AuthMiddleware
from metalform.api.body import BodyLimit, largest_limit
from metalform.api.errors import handle_error
from metalform.api.openapi import OpenApi, Operation, Route, build
from metalform.api.resources.applies import Applies, ApplyEvents, ApplyItem
from metalform.api.resources.plans import PlanApply, PlanItem, Plans
from metalform.api.resources.probes import Health, Metrics, Ready
from metalform.api.resources.status import History, ResourceItem, Resources, Status
from metalform.api.resources.webhooks import Webhook
from metalform.api.resources.workers import Workers
from metalform.console import Sessions, console_routes
from metalform.console.security import SecurityHeaders
from metalform.server.config import ServerConfig
from metalform.server.control import ControlPlane
from metalform.server.streams import EventHub
from metalform.store import Store
from reconciler.engine import Engine
from reconciler.secrets import REDACTOR
from webhooks import MAX_BODY_BYTES, ForgeClient, make_client
from webhooks.receiver import ENTRY_POINT_GROUP as WEBHOOK_ENTRY_POINTS
from webhooks.receiver import WebhookReceiver

_JSON_OUT = falcon.media.JSONHandler(
    # every JSON body passes the redactor: a secret that slipped into a message stays out
    dumps=lambda obj, **kw: REDACTOR(json.dumps(obj, ensure_ascii=False, default=str)),
)


class MetalformApp(falcon.App):  # type: ignore[type-arg]
    """The Falcon app, with the service behind it (tests and `serve` reach it here)."""

    service: ControlPlane
    routes: list[Route]
    stopping: threading.Event
    max_body: int
    """The largest body any route takes: the HTTP server buffers no more than this."""
    hub: EventHub
    sessions: Sessions
    """The web console's sign-ins."""


class RequestMetrics:
    """Counts requests by route template and status; times the non-streaming ones."""

    def __init__(self, service: ControlPlane) -> None:
        self.metrics = service.metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.monotonic()

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: object, succeeded: bool
    ) -> None:
        route = req.uri_template or "(unrouted)"
        status = str(resp.status_code)
        self.metrics.http.labels(req.method, route, status).inc()
        started = getattr(req.context, "started", None)
        if started is not None and resp.stream is None:
            self.metrics.http_seconds.labels(req.method, route).observe(time.monotonic() - started)


def forge_clients(config: ServerConfig) -> dict[str, ForgeClient]:
    """API clients of the forges whose token is configured."""
    clients: dict[str, ForgeClient] = {}
    for name, settings in (("github", config.github), ("gitlab", config.gitlab)):
        if settings is not None and settings.token:
            # cast: the clients match the protocol but declare `forge` as a ClassVar
            clients[name] = cast(ForgeClient, make_client(name, settings.token, settings.api_url))
    return clients


def _routes(
    service: ControlPlane, stopping: threading.Event, hub: EventHub, max_body: int
) -> list[Route]:
    return [
        *_probe_routes(service),
        *_plan_routes(service),
        *_apply_routes(service, hub, stopping),
        *_status_routes(service),
        *_webhook_routes(service, max_body),
    ]


def _probe_routes(service: ControlPlane) -> list[Route]:
    """Liveness, readiness, metrics and the site workers."""
    return [
        Route(
            "/healthz",
            Health(),
            {"GET": Operation("Liveness: the process answers", response=schemas.HEALTH)},
        ),
        Route(
            "/readyz",
            Ready(service),
            {
                "GET": Operation(
                    "Readiness: database and repository reachable",
                    response=schemas.READINESS,
                    other_statuses={503: schemas.READINESS},
                )
            },
        ),
        Route(
            "/metrics",
            Metrics(service),
            {"GET": Operation("Prometheus metrics", content_type="text/plain")},
        ),
        Route(
            "/api/v1/workers",
            Workers(service),
            {
                "GET": Operation(
                    "Site workers per site: last heartbeat, tasks in flight, queue depth",
                    response=schemas.WORKERS,
                )
            },
        ),
    ]


def _plan_routes(service: ControlPlane) -> list[Route]:
    """Plans: list, request, read, apply."""
    string = {"type": "string"}
    return [
        Route(
            "/api/v1/plans",
            Plans(service),
            {
                "GET": Operation(
                    "Plans, newest first, filtered by status and pull request",
                    response=schemas.PLANS,
                    query={
                        "status": schemas.RUN_STATUS,
                        "pullRequest": string,
                        "limit": schemas.HISTORY_LIMIT,
                        "before": schemas.CURSOR,
                    },
                ),
                "POST": Operation(
                    "Plan a revision (default: the tracked branch)",
                    status=202,
                    body=schemas.PLAN_REQUEST,
                    response=schemas.PLAN_CREATED,
                ),
            },
        ),
        Route(
            "/api/v1/plans/{id}",
            PlanItem(service),
            {
                "GET": Operation(
                    "A plan as JSON, or rendered with ?format=markdown|text",
                    query={"format": schemas.PLAN_FORMAT},
                    response=schemas.PLAN,
                    other_types=("text/markdown", "text/plain"),
                )
            },
        ),
        Route(
            "/api/v1/plans/{id}/apply",
            PlanApply(service),
            {
                "POST": Operation(
                    "Apply a plan; 409 when stale or another apply runs",
                    status=202,
                    response=schemas.APPLY_CREATED,
                )
            },
        ),
    ]


def _apply_routes(service: ControlPlane, hub: EventHub, stopping: threading.Event) -> list[Route]:
    """Applies: list, read, follow (Server-Sent Events)."""
    return [
        Route(
            "/api/v1/applies",
            Applies(service),
            {
                "GET": Operation(
                    "Applies, newest first, filtered by status and plan",
                    response=schemas.APPLIES,
                    query={
                        "status": schemas.RUN_STATUS,
                        "planId": schemas.CURSOR,
                        "limit": schemas.HISTORY_LIMIT,
                        "before": schemas.CURSOR,
                    },
                )
            },
        ),
        Route(
            "/api/v1/applies/{id}",
            ApplyItem(service),
            {
                "GET": Operation(
                    "An apply: per action status, timings and errors", response=schemas.APPLY
                )
            },
        ),
        Route(
            "/api/v1/applies/{id}/events",
            ApplyEvents(service, hub, stopping),
            {
                "GET": Operation(
                    "Server-Sent Events of an apply (resume with Last-Event-ID)",
                    content_type="text/event-stream",
                    query={"lastEventId": schemas.EVENT_ID},
                )
            },
        ),
    ]


def _status_routes(service: ControlPlane) -> list[Route]:
    """Status, resources and history."""
    string = {"type": "string"}
    return [
        Route(
            "/api/v1/status",
            Status(service),
            {
                "GET": Operation(
                    "Last planned and applied revision, drift, per-kind counts",
                    response=schemas.STATUS,
                )
            },
        ),
        Route(
            "/api/v1/resources",
            Resources(service),
            {
                "GET": Operation(
                    "Resources with sync and health",
                    response=schemas.RESOURCES,
                    query={
                        "kind": string,
                        "label": schemas.LABEL,
                        "status": schemas.RESOURCE_STATUS,
                    },
                )
            },
        ),
        Route(
            "/api/v1/resources/{kind}/{name}",
            ResourceItem(service),
            {
                "GET": Operation(
                    "One resource's status and its part of the last plan", response=schemas.RESOURCE
                )
            },
        ),
        Route(
            "/api/v1/history",
            History(service),
            {
                "GET": Operation(
                    "Plans and applies, newest first",
                    response=schemas.HISTORY,
                    query={"limit": schemas.HISTORY_LIMIT, "before": schemas.CURSOR},
                )
            },
        ),
    ]


def _webhook_routes(service: ControlPlane, max_body: int) -> list[Route]:
    """One route per webhook receiver found through the entry points."""
    config = service.config
    return [
        *(
            Route(
                receiver.route,
                Webhook(service, receiver, getattr(config, name, None), max_body),
                {
                    "POST": Operation(
                        receiver.summary, status=202, other_statuses={200: schemas.OBJECT}
                    )
                },
            )
            for name, receiver in sorted(webhook_receivers().items())
        ),
    ]


def webhook_receivers() -> dict[str, WebhookReceiver]:
    """The forges' webhook receivers, found through the `metalform.webhooks` entry points."""
    found: dict[str, WebhookReceiver] = {}
    for ep in entry_points(group=WEBHOOK_ENTRY_POINTS):
        receiver = ep.load()
        if not isinstance(receiver, WebhookReceiver):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a WebhookReceiver")
        found[ep.name] = receiver
    return found


def create_app(
    config: ServerConfig,
    engine: Engine,
    store: Store,
    *,
    service: ControlPlane | None = None,
    forge_clients_by_name: Mapping[str, ForgeClient] | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> MetalformApp:
    """The WSGI app. Background loops are not started here (see `metalform.server.serve`)."""
    if service is None:
        clients = forge_clients(config) if forge_clients_by_name is None else forge_clients_by_name
        service = ControlPlane(config, engine, store, forge_clients=clients)
    authenticator = Authenticator(config.tokens)
    sessions = Sessions(config.session_lifetime, secure=config.secure_cookie, store=service.store)
    # order matters: the token is checked before the body's size, and both before reading it
    app = MetalformApp(
        middleware=[
            RequestMetrics(service),
            SecurityHeaders(),
            AuthMiddleware(authenticator, sessions.principal),
            BodyLimit(),
        ]
    )
    handlers: dict[str, Any] = {falcon.MEDIA_JSON: _JSON_OUT}
    app.resp_options.media_handlers.update(handlers)
    app.add_error_handler(Exception, handle_error)
    app.add_error_handler(falcon.HTTPError, handle_error)
    stopping = threading.Event()
    hub = EventHub(
        store,
        max_streams=config.max_event_streams,
        max_per_client=config.max_event_streams_per_client,
        on_change=service.metrics.streams.set,
    )
    routes = _routes(service, stopping, hub, max_body)
    openapi = OpenApi({})
    routes.append(Route("/openapi.json", openapi, {"GET": Operation("This OpenAPI document")}))
    openapi.document = build(routes)
    for route in routes:
        app.add_route(route.path, route.resource)
    for path, resource in console_routes(service, sessions, authenticator).items():
        app.add_route(path, resource)
    app.service = service
    app.sessions = sessions
    app.routes = routes
    app.stopping = stopping
    app.max_body = largest_limit(route.resource for route in routes)
    app.hub = hub
    return app
