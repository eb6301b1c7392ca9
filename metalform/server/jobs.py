"""A small pool of worker threads: plans and applies run here, never on a request thread.

The engine is synchronous and does its own parallel I/O; a few workers are enough. Every job
is wrapped so an unexpected exception is logged (and never lost in a Future nobody reads) and
handed to the job's `on_crash`, which records what the job could not (a plan left running).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

log = logging.getLogger("metalform.server.workers")


class ShuttingDown(RuntimeError):
    """A job was submitted after `shutdown()`."""


class WorkerPool:
    """Runs jobs on `size` threads and can wait until it is idle (tests, shutdown)."""

    def __init__(self, size: int, on_change: Callable[[int], None] | None = None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="metalform-job")
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._on_change = on_change or (lambda n: None)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def submit(
        self,
        name: str,
        job: Callable[..., Any],
        *args: Any,
        on_crash: Callable[[BaseException], None] | None = None,
    ) -> Future[Any]:
        """Queue `job(*args)`; `name` names it in logs. An exception escaping the job is
        logged and passed to `on_crash`."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down")
            self._in_flight += 1
            self._on_change(self._in_flight)

        def run() -> Any:
            try:
                return job(*args)
            except Exception as exc:
                log.exception("job %s failed", name)
                if on_crash is not None:
                    try:
                        on_crash(exc)
                    except Exception:  # the store may be what failed; recovery retries
                        log.exception("job %s: could not record the failure", name)
                raise
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._on_change(self._in_flight)
                    self._cond.notify_all()

        return self._executor.submit(run)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until no job is queued or running (jobs may queue more); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def shutdown(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, let running ones finish (up to `timeout`), drop queued ones."""
        with self._cond:
            self._closed = True
        self.wait_idle(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
