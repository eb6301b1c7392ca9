"""One shared follower of the event log for every Server-Sent Events stream of the server.

Each stream used to poll the store on its own; with hundreds of followers that is hundreds
of queries a second. The hub polls once (only while someone follows) and hands each new
event to the subscriptions of its apply, waking their threads.

A subscription starts at the hub's cursor: events up to it are the stream's to replay from
the store, later ones the hub delivers, so none is lost or sent twice between the two.
Streams are capped per server and per client; past a cap `subscribe` raises
`StreamsExhausted` (the API answers 503).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable

from metalform.store import Event, Store
from reconciler.errors import MetalformError

log = logging.getLogger("metalform.server.streams")

POLL_SECONDS = 0.2
PAGE = 500
MAX_BACKLOG = 10_000
"""Events a subscription may hold undelivered (its client reads too slowly); past it the
stream ends and the client resumes from its Last-Event-ID."""


class StreamsExhausted(MetalformError):
    """Too many event streams are open (on the server, or for this client)."""


class Subscription:
    """One stream's share of the hub: the new events of its apply."""

    def __init__(self, hub: EventHub, apply_id: str, client: str, start: int) -> None:
        self.apply_id = apply_id
        self.client = client
        self.start = start
        """The hub's cursor when it subscribed: events up to it are not delivered here."""
        self._hub = hub
        self._items: deque[Event] = deque()
        self._ready = threading.Condition(hub._lock)
        self.ended = False
        """Set when the stream must end: the server stops, or the client fell behind."""

    def _push(self, event: Event) -> None:  # with the hub's lock held
        if len(self._items) >= MAX_BACKLOG:
            log.warning("event stream of apply %s fell behind; ending it", self.apply_id)
            self._items.clear()
            self.ended = True
        else:
            self._items.append(event)
        self._ready.notify()

    def _end(self) -> None:  # with the hub's lock held
        self.ended = True
        self._ready.notify()

    def take(self, timeout: float) -> list[Event]:
        """The events delivered since the last call, waiting up to `timeout` for one."""
        with self._ready:
            if not self._items and not self.ended:
                self._ready.wait(timeout)
            items = list(self._items)
            self._items.clear()
            return items


class EventHub:
    """Polls the event log once for all subscriptions; caps how many there are."""

    def __init__(
        self,
        store: Store,
        *,
        max_streams: int,
        max_per_client: int,
        poll_seconds: float = POLL_SECONDS,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.poll_seconds = poll_seconds
        self._on_change = on_change or (lambda n: None)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._by_apply: dict[str, set[Subscription]] = {}
        self._per_client: Counter[str] = Counter()
        self._count = 0
        self._cursor = 0
        self._generation = 0  # bumped when the cursor jumps: a poll in flight is stale
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> int:
        """Open subscriptions."""
        with self._lock:
            return self._count

    def subscribe(self, apply_id: str, client: str) -> Subscription:
        """Follow `apply_id` for `client`; raises `StreamsExhausted` past a cap."""
        newest = self.store.last_event_id()
        with self._lock:
            if self._closed:
                raise StreamsExhausted("the server is shutting down")
            if self._count >= self.max_streams:
                raise StreamsExhausted(
                    f"the server has {self._count} event streams open, its limit"
                )
            if self._per_client[client] >= self.max_per_client:
                raise StreamsExhausted(
                    f"{client} has {self._per_client[client]} event "
                    "streams open, the limit per client"
                )
            if self._count == 0:
                # idle until now: nothing was followed, so start at the log's end
                self._cursor = max(self._cursor, newest)
                self._generation += 1
            sub = Subscription(self, apply_id, client, self._cursor)
            self._by_apply.setdefault(apply_id, set()).add(sub)
            self._per_client[client] += 1
            self._count += 1
            self._start()
            self._wake.notify_all()
            count = self._count
        self._on_change(count)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to `sub`; idempotent."""
        with self._lock:
            followers = self._by_apply.get(sub.apply_id)
            if followers is None or sub not in followers:
                return
            followers.discard(sub)
            if not followers:
                del self._by_apply[sub.apply_id]
            self._per_client[sub.client] -= 1
            if self._per_client[sub.client] <= 0:
                del self._per_client[sub.client]
            self._count -= 1
            count = self._count
        self._on_change(count)

    def close(self, timeout: float = 5.0) -> None:
        """End every stream (their threads return) and stop polling."""
        with self._lock:
            self._closed = True
            for followers in self._by_apply.values():
                for sub in followers:
                    sub._end()
            self._wake.notify_all()
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _start(self) -> None:  # with the lock held
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="metalform-event-hub", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                while self._count == 0 and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                cursor, generation = self._cursor, self._generation
            try:
                events = self.store.list_events(cursor, limit=PAGE)
            except Exception as exc:  # the database is away: streams wait, keep-alives go on
                log.warning("event hub: cannot read the event log: %s", exc)
                self._stop.wait(1.0)
                continue
            self._deliver(events, generation)
            if len(events) < PAGE and self._stop.wait(self.poll_seconds):
                return

    def _deliver(self, events: list[Event], generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # the cursor moved while reading
            for event in events:
                self._cursor = event.id
                for sub in self._by_apply.get(event.apply_id or "", ()):
                    sub._push(event)
