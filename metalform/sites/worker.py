"""`metalform worker --site NAME`: a Celery worker (threads pool) serving queue `site-NAME`."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import redis

from metalform.sites.app import HEARTBEAT_PREFIX, make_app, make_redis
from metalform.sites.config import SitesConfig, queue_of
from metalform.sites.tasks import WorkerState, register
from reconciler.provider import ProviderFactory

log = logging.getLogger("metalform.sites.worker")


def heartbeat(
    client: redis.Redis, state: WorkerState, name: str, ttl: float, stop: threading.Event
) -> None:
    """A key per worker with a TTL: it vanishes by itself when the worker dies."""
    started = time.time()
    key = f"{HEARTBEAT_PREFIX}{state.site}:{name}"
    while not stop.is_set():
        record = {
            "site": state.site,
            "hostname": name,
            "pid": os.getpid(),
            "startedAt": started,
            "lastHeartbeat": time.time(),
            "inFlight": state.in_flight,
            "processed": state.processed,
            "refused": state.refused,
        }
        try:
            client.set(key, json.dumps(record), ex=max(1, int(ttl)))
        except Exception as exc:  # the broker restarting: try again at the next beat
            log.warning("site %s: heartbeat failed: %s", state.site, exc)
        stop.wait(ttl / 3)
    try:
        client.delete(key)
    except Exception:  # going away anyway; the TTL removes the key
        log.debug("heartbeat key not removed", exc_info=True)


def run_worker(
    config: SitesConfig,
    site: str,
    *,
    concurrency: int = 8,
    base_dir: Path | None = None,
    visibility_timeout: float = 3600.0,
    loglevel: str = "INFO",
    factories: Mapping[str, ProviderFactory] | None = None,
) -> int:
    """Serve `site-NAME` until stopped (SIGTERM/SIGINT: warm shutdown). `factories` default
    to the installed providers (benchmarks plug in emulated fleets there)."""
    app = make_app(config, visibility_timeout=visibility_timeout)
    client = make_redis(config)
    state = WorkerState(site=site, key=config.task_key, label=config.label, base_dir=base_dir)
    if factories is not None:
        state.factories = factories
    register(app, state, client)
    name = f"{site}@{socket.gethostname()}.{os.getpid()}"
    stop = threading.Event()
    beat = threading.Thread(
        target=heartbeat,
        args=(client, state, name, config.heartbeat_ttl, stop),
        name="heartbeat",
        daemon=True,
    )
    beat.start()
    try:
        app.worker_main(
            [
                "worker",
                "--queues",
                queue_of(site),
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--hostname",
                name,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                loglevel,
            ]
        )
    finally:
        stop.set()
        beat.join(timeout=5)
    return 0
