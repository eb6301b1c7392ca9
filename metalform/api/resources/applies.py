"""Applies: progress as JSON, and a Server-Sent Events stream of their events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import falcon

from metalform.api import serialize
from metalform.api.errors import InvalidRequest
from metalform.server.config import Role
from metalform.server.service import Service
from metalform.store import Event, Store
from reconciler.secrets import REDACTOR

FINAL_EVENTS = frozenset({"apply.succeeded", "apply.failed"})
POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0
MAX_STREAM_SECONDS = 6 * 3600.0
"""A client following an apply that never ends is let go eventually; it can resume."""


class ApplyItem:
    """`GET /api/v1/applies/{id}`: every action's status, timings and error."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: Service) -> None:
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        resp.media = serialize.apply(self.service.store.get_apply(id), with_actions=True)


def sse(item: Event) -> bytes:
    """One event in the SSE wire format; the id lets a client resume (Last-Event-ID)."""
    data = REDACTOR(json.dumps(serialize.event(item), separators=(",", ":")))
    return f"id: {item.id}\nevent: {item.type}\ndata: {data}\n\n".encode()


def follow(store: Store, apply_id: str, after: int, stop: threading.Event,
           poll: float = POLL_SECONDS, limit: float = MAX_STREAM_SECONDS) -> Iterator[bytes]:
    """The events of one apply after `after`, as they are appended, until it finishes."""
    yield b"retry: 2000\n\n"
    started = last_sent = time.monotonic()
    while not stop.is_set() and time.monotonic() - started < limit:
        events = store.list_events(after, apply_id=apply_id, limit=200)
        for item in events:
            after = item.id
            yield sse(item)
            if item.type in FINAL_EVENTS:
                return
        if events:
            last_sent = time.monotonic()
            continue
        if store.get_apply(apply_id).status.terminal:
            # finished before `after` (a resumed stream): one more look for stragglers
            for item in store.list_events(after, apply_id=apply_id, limit=200):
                yield sse(item)
            return
        if time.monotonic() - last_sent >= HEARTBEAT_SECONDS:
            last_sent = time.monotonic()
            yield b": keep-alive\n\n"
        stop.wait(poll)


class ApplyEvents:
    """`GET /api/v1/applies/{id}/events`: a Server-Sent Events stream that ends with the
    apply; resumes after `Last-Event-ID` (header) or `?lastEventId=`."""

    roles = {"GET": Role.VIEWER}

    def __init__(self, service: Service, stop: threading.Event) -> None:
        self.service = service
        self.stop = stop

    def on_get(self, req: falcon.Request, resp: falcon.Response, id: str) -> None:
        record = self.service.store.get_apply(id)  # 404 before the stream starts
        raw = req.get_header("Last-Event-ID") or req.get_param("lastEventId") or "0"
        if not raw.isdigit():
            raise InvalidRequest("Last-Event-ID must be an event id (a number)")
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.set_header("X-Accel-Buffering", "no")  # proxies must not hold events back
        resp.stream = follow(self.service.store, record.id, int(raw), self.stop)
