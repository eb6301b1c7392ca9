"""kombu's Redis transport, surviving a broker restart while tasks are in flight.

When Redis goes away under a worker that holds unacknowledged tasks (late acks), Celery
closes the connection and then the channel; the channel's close tries to put those tasks
back through a new connection pool, built from the connection it was just detached from,
and fails with `AttributeError: 'NoneType' object has no attribute 'hostname'`, an error
Celery treats as unrecoverable: the worker exits instead of reconnecting. Nothing can be
restored at that point anyway (the broker is gone, and a restarted Redis without
persistence has lost the unacked set too), so the restore is skipped, the worker reconnects,
and the sender's bounded wait reports the lost task. Likewise the ack of a task that ends
after the reconnection, on the old channel.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

log = logging.getLogger("metalform.sites.worker")
NAME = "metalform.sites.transport:Transport"
"""The `broker_transport` setting that selects this transport."""


class QoS(kombu_redis.QoS):
    """A channel's QoS whose acks and restores are skipped once its connection is closed."""

    def _detached(self, what: str) -> bool:
        transport = self.channel.connection
        if transport is None or transport.client is None:
            log.warning("the broker connection of this channel is gone: %s skipped", what)
            return True
        return False

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        if self._detached("restoring in-flight tasks"):
            return None
        return super().restore_unacked_once(stderr)  # type: ignore[no-untyped-call]

    def ack(self, delivery_tag: Any) -> None:
        # A task that finishes after a reconnection was delivered on the old channel: its
        # message is not in the restarted broker, there is nothing to acknowledge.
        if not self._detached("acknowledging a task delivered before the broker was lost"):
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if not self._detached("rejecting a task delivered before the broker was lost"):
            super().reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
