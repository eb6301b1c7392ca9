"""The server's notifications: the tracked revision's NotificationRules, on the event bus.

Which rules apply is itself desired state, so it follows Git: after each successful plan of
the tracked branch the service hands the plan's desired state here, and when the revision
changed a new `BackgroundNotifier` replaces the old one on the bus. A revision whose
notification resources are broken keeps the previous notifier (its plan reports the errors);
going quiet because someone pushed a typo would hide exactly the events people wait for.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from metalform.events import EventBus
from metalform.notify import BackgroundNotifier, NotificationConfigError, Notifier
from reconciler.engine import CredentialResolver
from reconciler.load import DesiredState
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.server.notify")

NotifierFactory = Callable[[DesiredState, Path | None], Notifier]


def default_notifier(desired: DesiredState, base_dir: Path | None) -> Notifier:
    """A Notifier of `desired`; secrets are resolved only when a message is sent."""
    return Notifier.from_desired(
        desired, CredentialResolver(desired.resources, base_dir), base_dir=base_dir
    )


class ServerNotifications:
    """Keeps one BackgroundNotifier, built from the tracked revision, subscribed to the bus."""

    def __init__(
        self,
        bus: EventBus,
        *,
        factory: NotifierFactory = default_notifier,
        tick_interval: float = 5.0,
    ) -> None:
        self.bus = bus
        self.factory = factory
        self.tick_interval = tick_interval
        self.revision: str | None = None
        self.current: BackgroundNotifier | None = None
        self._lock = threading.Lock()
        self._closed = False

    def update(self, desired: DesiredState, revision: str, base_dir: Path | None) -> None:
        """Follow the tracked branch to `revision`; nothing to do when it did not change."""
        with self._lock:
            if self._closed or revision == self.revision:
                return
            self.revision = revision
            notifier: Notifier | None = None
            if desired.of_kind("NotificationRule"):
                try:
                    notifier = self.factory(desired, base_dir)
                except NotificationConfigError as exc:
                    log.warning(
                        "notifications of %s not used, the previous ones stay: %s",
                        revision,
                        REDACTOR(str(exc)),
                    )
                    return
                except Exception as exc:
                    # Notifications must never fail the plan that brought them; by class
                    # only, as the text of an unexpected error may quote a secret URL.
                    log.warning(
                        "notifications of %s not used, the previous ones stay: unexpected %s",
                        revision,
                        type(exc).__name__,
                    )
                    return
            old = self.current
            self.current = None
            if notifier is not None:
                self.current = BackgroundNotifier(notifier, tick_interval=self.tick_interval)
                self.bus.subscribe(self.current)
            if old is not None:
                self.bus.unsubscribe(old)
        if old is not None:
            # Outside the lock: closing delivers what it still holds, which may take a while.
            old.close()
        log.info(
            "notifications follow %s: %d rule(s)",
            revision,
            len(notifier.rules) if notifier is not None else 0,
        )

    def close(self, timeout: float = 30.0) -> None:
        """Stop listening, deliver what is queued and send held digests (at shutdown)."""
        with self._lock:
            self._closed = True
            current, self.current = self.current, None
            if current is not None:
                self.bus.unsubscribe(current)
        if current is not None:
            current.close(timeout)
