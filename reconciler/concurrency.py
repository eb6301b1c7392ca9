"""Concurrency limits: a global bound on parallel work and a per-endpoint bound on requests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_PARALLELISM = 256
"""Reads and actions in flight across distinct endpoints: a fleet has one BMC per server, each
answering in 100-500 ms, so hundreds at once keep a plan near one BMC's read chain; the
per-endpoint limit still bounds what any one BMC or API sees."""
DEFAULT_PER_ENDPOINT = 4


class Limiter:
    """Hands out request slots per endpoint (a BMC, an API), at most `per_endpoint` at once.

    The global bound (`parallelism`) is the size of the worker pools that gather and apply use.
    """

    def __init__(
        self, parallelism: int = DEFAULT_PARALLELISM, per_endpoint: int = DEFAULT_PER_ENDPOINT
    ) -> None:
        if parallelism < 1 or per_endpoint < 1:
            raise ValueError("parallelism and per-endpoint limits must be at least 1")
        self.parallelism = parallelism
        self.per_endpoint = per_endpoint
        self._lock = threading.Lock()
        self._endpoints: dict[str, threading.BoundedSemaphore] = {}

    def _semaphore(self, endpoint: str) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._endpoints.get(endpoint)
            if sem is None:
                sem = self._endpoints[endpoint] = threading.BoundedSemaphore(self.per_endpoint)
            return sem

    @contextmanager
    def slot(self, endpoint: str) -> Iterator[None]:
        """Hold one of the endpoint's request slots for the duration of a request."""
        sem = self._semaphore(endpoint)
        sem.acquire()
        try:
            yield
        finally:
            sem.release()
