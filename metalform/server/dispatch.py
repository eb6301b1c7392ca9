"""waitress' task dispatcher, except that event streams do not take a request thread.

waitress serves every request on a fixed pool of threads and a Server-Sent Events stream
holds its thread for as long as the client follows: 16 followers used to leave nothing for
`/healthz`. Here a request for a stream (a GET of a path `is_stream` accepts) gets a thread
of its own, up to `max_streams` of them; everything else, and streams past that bound (the
app answers those 503 at once), goes to the pool as before. The stream threads wait on the
shared event hub, so they cost memory, not CPU or database queries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("metalform.server")


class StreamingDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]
    """Runs stream requests on threads of their own, the rest on waitress' pool."""

    def __init__(self, is_stream: Callable[[str], bool], max_streams: int) -> None:
        super().__init__()
        self.is_stream = is_stream
        self.max_streams = max_streams
        self._streams: set[threading.Thread] = set()
        self._streams_lock = threading.Lock()

    @property
    def stream_threads(self) -> int:
        with self._streams_lock:
            return len(self._streams)

    def add_task(self, task: Any) -> None:
        """Called by waitress' loop with a channel whose first request is complete."""
        if not (self._wants_own_thread(task) and self._start_stream(task)):
            super().add_task(task)

    def _wants_own_thread(self, channel: Any) -> bool:
        requests = getattr(channel, "requests", None)
        if not requests:
            return False
        request = requests[0]
        return request.error is None and request.command == "GET" and self.is_stream(request.path)

    def _start_stream(self, channel: Any) -> bool:
        with self._streams_lock:
            if len(self._streams) >= self.max_streams:
                return False
            thread = threading.Thread(
                target=self._serve, args=(channel,), name="metalform-stream", daemon=True
            )
            self._streams.add(thread)
        thread.start()
        return True

    def _serve(self, channel: Any) -> None:
        try:
            channel.service()
        except BaseException:
            log.exception("event stream failed")
        finally:
            with self._streams_lock:
                self._streams.discard(threading.current_thread())

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        """Wait for the stream threads (ended by the hub by then), then for the pool."""
        deadline = time.monotonic() + timeout
        with self._streams_lock:
            streams = list(self._streams)
        for thread in streams:
            thread.join(max(0.0, deadline - time.monotonic()))
        left = self.stream_threads
        if left:
            log.warning("%d event stream thread(s) still running", left)
        return bool(super().shutdown(cancel_pending, max(0.1, deadline - time.monotonic())))
