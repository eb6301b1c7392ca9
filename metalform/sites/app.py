"""The Celery application both sides share: JSON only, late acks, bounded waits."""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery

from metalform.sites.config import SitesConfig
from metalform.sites.transport import NAME as TRANSPORT

READ_TASK = "metalform.sites.read"
EXECUTE_TASK = "metalform.sites.execute"
FINGERPRINT_TASK = "metalform.sites.fingerprints"
HEARTBEAT_PREFIX = "metalform:worker:"
STARTED_PREFIX = "metalform:started:"
REPLY_PREFIX = "metalform:reply:"
REPLY_TTL = 3600


def make_app(config: SitesConfig, *, visibility_timeout: float = 3600.0) -> Celery:
    """A Celery app for `config`.

    Late acks and reject-on-worker-lost: a task whose worker dies is delivered again (after
    `visibility_timeout` on Redis, when its connection drops on RabbitMQ), never lost.
    Timeouts on every socket: a broker restarted mid-apply makes a call fail within seconds
    instead of blocking forever. No Celery result backend: a worker pushes its answer onto a
    reply list named in the signed task, which the sender waits on with BLPOP (one blocking
    call for many tasks, no polling, no pub/sub).
    """
    app = Celery("metalform", broker=config.url())
    transport: dict[str, Any] = {
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.5,
        "interval_max": 1.0,
    }
    if config.redis_broker:
        transport |= {
            "visibility_timeout": visibility_timeout,
            # Look for the tasks of dead workers every few seconds (kombu's default: 100 s).
            "unacked_restore_interval": max(1, min(10, int(visibility_timeout / 2))),
            "unacked_restore_throttle": 1,
            "socket_timeout": 10.0,
            "socket_connect_timeout": 5.0,
        }
    # RabbitMQ redelivers a dead worker's unacked task when its connection drops (the AMQP
    # heartbeat below notices within seconds); it needs no visibility timeout.
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="metalform-default",
        task_create_missing_queues=True,
        broker_transport_options=transport,
        task_ignore_result=True,
        broker_connection_timeout=5.0,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_heartbeat=10,
    )
    if config.tls is not None:
        app.conf.broker_use_ssl = config.tls
    if config.redis_broker:
        app.conf.broker_transport = TRANSPORT  # survives a broker restart (see transport.py)
    return app


def make_redis(config: SitesConfig) -> redis.Redis:
    """The Redis that holds replies, heartbeats and started-marks (the broker's, by default).

    Socket timeouts bound every call, so a restarted Redis fails a wait instead of hanging it.
    """
    return redis.Redis.from_url(
        config.backend_url(),
        socket_timeout=10.0,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        **(config.tls or {}),
    )
