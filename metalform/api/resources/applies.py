"""Applies: progress as JSON, and a Server-Sent Events stream of their events.

A stream runs on a thread of its own, not one of the request pool (see
`metalform.server.dispatch`), and waits on the server's event hub, which reads the event log
once for every stream (see `metalform.server.streams`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import falcon

from metalform.api import serialize
from metalform.api.auth import who
from metalform.api.errors import ApiError
from metalform.api.resources.plans import page_limit, run_status
from metalform.server.config import Role
from metalform.server.control import ControlPlane
from metalform.server.streams import EventHub, StreamsExhausted, Subscription
from metalform.store import Event, Store
from reconciler.model.events import APPLY_ENDED
from reconciler.secrets import REDACTOR

HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 6 * 3600.0
"""A client following an apply that never ends is let go eventually; it can resume."""
MAX_EVENT_ID_DIGITS = 18  # every id of a signed 64-bit column fits; more is not an id
RETRY_AFTER_SECONDS = 10
_PAGE = 200


class TooManyStreams(ApiError):
    status, code = 503, "TOO_MANY_STREAMS"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def last_event_id(raw: str) -> int:
    """The id a client resumes after: ASCII digits only (`str.isdigit` also takes `²`)."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > MAX_EVENT_ID_DIGITS:
        raise ApiError(
            f"Last-Event-ID must be an event id: 1 to {MAX_EVENT_ID_DIGITS} ASCII digits",
            {"field": "Last-Event-ID"},
        )
    return int(raw)


class Applies:
    """`GET /api/v1/applies[?status=&planId=&limit=&before=]`: applies, newest first."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = page_limit(req)
        page = self.service.store.list_applies(
            repository=self.service.repository,
            plan_id=req.get_param("planId"),
            status=run_status(req),
            limit=limit,
            before=req.get_param("before"),
        )
        resp.media = {
            "items": [serialize.apply(r) for r in page.items],
            "nextBefore": page.next_before,
        }
        if page.next_before:
            resp.append_link(f"/api/v1/applies?limit={limit}&before={page.next_before}", "next")


class ApplyItem:
    """`GET /api/v1/applies/{id}`: every action's status, timings and error."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        resp.media = serialize.apply(self.service.store.get_apply(id), with_actions=True)


def sse(item: Event) -> bytes:
    """One event in the SSE wire format; the id lets a client resume (Last-Event-ID)."""
    data = REDACTOR(json.dumps(serialize.event(item), separators=(",", ":")))
    return f"id: {item.id}\nevent: {item.type}\ndata: {data}\n\n".encode()


class EventStream:
    """The body of one stream: the apply's events after `after`, replayed from the store and
    then as the hub delivers them, until the apply ends. A WSGI iterable: the server calls
    `close()` when the stream ends or its client goes, which frees the subscription."""

    def __init__(
        self,
        store: Store,
        hub: EventHub,
        sub: Subscription,
        after: int,
        stop: threading.Event,
        limit: float = MAX_STREAM_SECONDS,
    ) -> None:
        self.store = store
        self.hub = hub
        self.sub = sub
        self.after = after
        self.stop = stop
        self.limit = limit

    def __iter__(self) -> Iterator[bytes]:
        return self._events()

    def close(self) -> None:
        self.hub.unsubscribe(self.sub)

    def _stored(self, upto: int | None) -> Iterator[Event]:
        """The apply's events after the last one sent, from the store (up to id `upto`)."""
        while True:
            page = self.store.list_events(self.after, apply_id=self.sub.apply_id, limit=_PAGE)
            for item in page:
                if upto is not None and item.id > upto:
                    return
                yield item
            if len(page) < _PAGE:
                return

    def _send(self, item: Event) -> bytes:
        self.after = item.id
        return sse(item)

    def _events(self) -> Iterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            # up to the hub's cursor at subscription the store has them; later, the hub
            for item in self._stored(upto=self.sub.start):
                yield self._send(item)
                if item.type in APPLY_ENDED:
                    return
            if self.store.get_apply(self.sub.apply_id).status.terminal:
                # it ended since: its last events are in the store already
                for item in self._stored(upto=None):
                    yield self._send(item)
                return
            yield from self._live()
        finally:
            self.close()

    def _live(self) -> Iterator[bytes]:
        started = last_sent = time.monotonic()
        while not self.stop.is_set() and not self.sub.ended:
            now = time.monotonic()
            if now - started >= self.limit:
                return
            wait = min(HEARTBEAT_SECONDS - (now - last_sent), self.limit - (now - started))
            items = self.sub.take(max(0.0, wait))
            for item in items:
                if item.id <= self.after:
                    continue
                yield self._send(item)
                if item.type in APPLY_ENDED:
                    return
            if items:
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
                last_sent = time.monotonic()
                yield b": keep-alive\n\n"


class ApplyEvents:
    """`GET /api/v1/applies/{id}/events`: a Server-Sent Events stream that ends with the
    apply; resumes after `Last-Event-ID` (header) or `?lastEventId=`. 503 past the number
    of streams the server, or this token, may have open."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: ControlPlane, hub: EventHub, stop: threading.Event) -> None:
        self.service = service
        self.hub = hub
        self.stop = stop

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        record = self.service.store.get_apply(id)  # 404 before the stream starts
        raw = req.get_header("Last-Event-ID") or req.get_param("lastEventId") or "0"
        after = last_event_id(raw)
        # the auth middleware ran: every stream has a token, the cap counts per token
        name = who(req)
        client = f"token {name}" if name else f"address {req.remote_addr}"
        try:
            sub = self.hub.subscribe(record.id, client)
        except StreamsExhausted as exc:
            raise TooManyStreams(str(exc)) from None
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")  # proxies must not hold events back
        resp.stream = EventStream(self.service.store, self.hub, sub, after, self.stop)
