"""The notifier on a thread of its own, so that publishing an event never waits on delivery."""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
from collections.abc import Callable

from metalform.notify.event import BusEventLike, Event
from metalform.notify.router import Notifier

log = logging.getLogger("metalform.notify")


class BackgroundNotifier:
    """Runs a Notifier on its own thread: bus subscribers must return at once, while a
    delivery may wait on timeouts and retries. Also sends due digests while idle."""

    def __init__(
        self, notifier: Notifier, *, tick_interval: float = 5.0, max_queued: int = 1000
    ) -> None:
        self.notifier = notifier
        self.tick_interval = tick_interval
        self.dropped = 0
        self._queue: queue.Queue[Event | BusEventLike | None] = queue.Queue(max_queued)
        self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
        self._thread.start()

    def __call__(self, event: Event | BusEventLike) -> None:
        """Queue an event (the event-bus subscriber); drops it when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            log.warning("notification queue full; event %s dropped", event.type)

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued, flush digests and stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                event = self._queue.get(timeout=self.tick_interval)
            except queue.Empty:
                self._guarded(self.notifier.tick)
                continue
            if event is None:
                self._guarded(self.notifier.close)
                return
            self._guarded(functools.partial(self.notifier.notify, event))

    @staticmethod
    def _guarded(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception as exc:
            # Not log.exception: a traceback's text could quote a secret URL in pieces.
            log.warning("notification worker error: %s", type(exc).__name__)
