"""Helpers shared by providers: retries of temporary failures, parallel reads."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from reconciler.errors import ProviderError, TemporaryError
from reconciler.model import Address, LiveResource, Resource
from reconciler.model.live import unreachable

log = logging.getLogger("metalform.providers")
T = TypeVar("T")

MAX_BACKOFF = 8.0


def with_retries(
    fn: Callable[[], T],
    *,
    retries: int,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying a TemporaryError up to `retries` more times with backoff."""
    attempt = 0
    while True:
        try:
            return fn()
        except TemporaryError as exc:
            if attempt >= retries:
                raise
            delay = min(MAX_BACKOFF, max(exc.retry_after, 0.2) * (2**attempt))
            attempt += 1
            log.info("%s: %s; retry %d/%d in %.1fs", what, exc, attempt, retries, delay)
            sleep(delay)


def read_each(
    resources: Sequence[Resource],
    read_one: Callable[[Resource], LiveResource],
    *,
    parallelism: int,
) -> Mapping[Address, LiveResource]:
    """Read resources concurrently; a failure of one becomes an Unreachable LiveResource."""

    def guarded(resource: Resource) -> LiveResource:
        try:
            return read_one(resource)
        except ProviderError as exc:
            return unreachable(resource.address, str(exc))

    if not resources:
        return {}
    workers = max(1, min(parallelism, len(resources)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="read") as pool:
        results = list(pool.map(guarded, resources))
    return {live.address: live for live in results}
