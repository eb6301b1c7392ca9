"""The background loop: poll the remote for new commits, check for drift and look for work of
dead replicas to interrupt, on intervals.

One thread, woken by a stop event, so `stop()` returns at once and tests can run it with
intervals of a fraction of a second. A check never overlaps the previous one: while a drift
plan is still queued or running the next tick is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from reconciler.errors import MetalformError
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from metalform.server.control import ControlPlane

log = logging.getLogger("metalform.server.drift")

RECOVER_SECONDS = 10.0
"""How often a running server looks for plans and applies of processes that died (another
replica on a shared PostgreSQL): their event streams end within about this long."""


class Scheduler:
    """Runs `service.poll()` once at start (after `first_delay`) and then every poll interval,
    and `service.check_drift()` every drift interval (0 disables either repetition)."""

    def __init__(
        self,
        service: ControlPlane,
        *,
        poll_interval: float,
        drift_interval: float,
        first_delay: float = 0.0,
        recover_interval: float = RECOVER_SECONDS,
        prune_interval: float = 0.0,
    ) -> None:
        self.prune_interval = prune_interval
        self.service = service
        self.recover_interval = recover_interval
        self.poll_interval = poll_interval
        self.drift_interval = drift_interval
        self.first_delay = first_delay
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending_drift: str | None = None
        self._polled = False

    def start(self) -> Scheduler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="metalform-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        now = time.monotonic()
        # one poll at start even without polling: /readyz needs a fetch, status a first plan
        next_poll = now + self.first_delay
        next_drift = now + (self.drift_interval or float("inf"))
        next_recover = now + (self.recover_interval or float("inf"))
        # the first pass soon after start: a server restarted daily still prunes
        next_prune = now + (min(60.0, self.prune_interval) if self.prune_interval else float("inf"))
        while not self._stop.is_set():
            soonest = min(next_poll, next_drift, next_recover, next_prune)
            wait = max(0.0, soonest - time.monotonic())
            if wait == float("inf"):
                self._stop.wait()
                return
            if self._stop.wait(wait):
                return
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + self.poll_interval if self.poll_interval else float("inf")
                self._tick("poll", self._poll)
            if now >= next_drift:
                next_drift = now + self.drift_interval
                self._tick("drift check", self._drift)
            if now >= next_recover:
                next_recover = now + self.recover_interval
                self._tick("recovery", self.service.recover)
            if now >= next_prune:
                next_prune = now + self.prune_interval
                self._tick("retention", self.service.prune)

    def _tick(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except MetalformError as exc:
            log.warning("%s failed: %s", what, REDACTOR(str(exc)))
        except Exception:  # the loop must survive anything one tick does
            log.exception("%s failed", what)

    def _poll(self) -> None:
        self.service.poll(who="poll" if self._polled else "startup")
        self._polled = True

    def _drift(self) -> None:
        if self._pending_drift is not None:
            record = self.service.store.get_plan(self._pending_drift)
            if not record.status.terminal:
                log.info("drift check skipped: plan %s is still %s", record.id, record.status.value)
                return
        self._pending_drift = self.service.check_drift().id
