"""The parts and state the ControlPlane's planning and applying halves share."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from metalform.events import EventBus
from metalform.server.config import ServerConfig
from metalform.server.jobs import WorkerPool
from metalform.server.metrics import Metrics
from metalform.server.notifications import ServerNotifications
from metalform.server.reporting import ForgeReporter, PullRequest
from metalform.server.repository import (
    Tracker,
)
from metalform.store import (
    ApplyRecord,
    ConflictError,
    Lock,
    PlanRecord,
    Store,
    Trigger,
    locks,
    recovery,
)
from metalform.store.journals import store_journals
from reconciler.engine import Engine
from reconciler.errors import MetalformError
from webhooks import ForgeClient

log = logging.getLogger("metalform.server")


class ApplyInProgress(ConflictError):
    """Another apply of the repository holds its lock (here or on another replica)."""

    template = "another apply of {repository} is running; try again when it has finished"


class PlanNotApplicable(ConflictError):
    """The plan cannot be applied as it is (failed, has errors, not the latest)."""


@dataclass
class DriftState:
    """The last drift check, for /api/v1/status."""

    checked_at: float | None = None
    plan_id: str | None = None
    revision: str | None = None
    drifted: list[str] = field(default_factory=list)
    error: str | None = None


class ControlBase(ABC):
    """What the planning and applying halves of the ControlPlane share: its parts and state."""

    def __init__(
        self,
        config: ServerConfig,
        engine: Engine,
        store: Store,
        *,
        tracker: Tracker | None = None,
        forge_clients: Mapping[str, ForgeClient] | None = None,
        metrics: Metrics | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        if engine.settings.journals is None:
            # what providers must remember goes to the store: every replica reads it
            engine.settings.journals = store_journals(store)
        self.store = store
        self.tracker = tracker or Tracker(
            config.repository_url, config.branch, config.path, config.data_dir
        )
        self.metrics = metrics or Metrics()
        self.bus = bus or EventBus(store)
        self.reporter = ForgeReporter(forge_clients or {}, store, config.public_url)
        self.owner = locks.new_owner()
        instance = store.try_lock(recovery.instance_lock_name(self.owner), owner=self.owner)
        if instance is None:  # the name is new: only a broken database refuses it
            raise MetalformError("could not register this server process in the store")
        self._instance_lock: Lock = instance
        self.workers = WorkerPool(config.workers, on_change=self.metrics.jobs.set)
        self.drift = DriftState()
        self.started_at = time.time()
        self._version = 0
        # any event may change what the status shows; readers compare versions to cache it
        self.bus.subscribe(lambda event: self.changed())
        self.notifications = ServerNotifications(self.bus)
        self._last_head: str | None = None
        self._head_lock = threading.Lock()
        self._status_lock = threading.Lock()
        """Serialises resource status writes of plans and applies of this process: a plan
        finishing while an apply starts must not overwrite `Progressing`."""

    @property
    def repository(self) -> str:
        return self.tracker.key

    @property
    def version(self) -> int:
        """Grows whenever the server records something (for caches of derived views)."""
        return self._version

    def changed(self) -> None:
        self._version += 1  # a lost increment under a race only costs a cache refresh

    @abstractmethod
    def request_apply(
        self,
        plan_id: str,
        *,
        trigger: Trigger = Trigger.API,
        who: str | None = None,
        pull_request: PullRequest | None = None,
    ) -> ApplyRecord:
        """Queue the apply of a plan (`metalform.server.applying`)."""

    @abstractmethod
    def _interrupted(
        self, plans: list[PlanRecord] | None = None, applies: list[ApplyRecord] | None = None
    ) -> None:
        """Tell the bus and forges about records that were interrupted (`ControlPlane`)."""
