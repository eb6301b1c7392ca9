"""`metalform serve`: the API on waitress, the background loop, and a clean shutdown.

Requests are served by a pool of SERVER_THREADS threads; event streams by threads of their
own (`StreamingDispatcher`), so followers never take the pool from the other routes.

SIGTERM or SIGINT stops accepting connections, ends event streams (and waits for their
threads, so no channel is closed under one), lets running plans and applies finish (up to a
grace period; an apply holds its lock until it is recorded finished), and closes the store.
"""

from __future__ import annotations

import logging
import re
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from waitress import wasyncore

from metalform.api.app import MetalformApp, create_app
from metalform.server import http_limits
from metalform.server.config import ServerConfig, describe, load_config
from metalform.server.dispatch import StreamingDispatcher
from metalform.server.drift import Scheduler
from metalform.server.metrics import Metrics
from metalform.store import Store
from reconciler.engine import Engine, Routing, Settings

log = logging.getLogger("metalform.server")

SHUTDOWN_GRACE_SECONDS = 60.0
STREAM_DRAIN_SECONDS = 5.0
SERVER_THREADS = 16
STREAM_THREAD_MARGIN = 16
"""Stream threads beyond the cap, so requests over it get their 503 without a pool thread
wait; past it they go to the pool, which answers them 503 at once."""
OTHER_CONNECTIONS = 200
"""Connections beyond the streams: API clients, probes, webhooks."""
_STREAM_PATH = re.compile(r"/api/v1/applies/[^/]+/events/?")


def site_router(config: ServerConfig) -> Routing | None:
    """The dispatcher to site workers when `broker:` is configured (Celery loaded only then)."""
    if config.sites is None:
        return None
    from metalform.sites.dispatch import SiteRouter

    return SiteRouter(config.sites)


def watch_sites(engine: Engine, metrics: Metrics) -> None:
    """Site tasks and queues in the server's metrics, when it dispatches to sites."""
    if engine.route is None:
        return
    from metalform.sites.dispatch import SiteRouter

    router = engine.route
    if not isinstance(router, SiteRouter):
        return
    router.observer = metrics.site_task
    metrics.sites = router.overview


class Server:
    """The running server: app, waitress listener and background loop."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.store = Store.open(config.database)
        try:
            self.app: MetalformApp = create_app(
                config,
                engine
                or Engine(
                    Settings(parallelism=config.parallelism, per_endpoint=config.per_endpoint),
                    route=site_router(config),
                ),
                self.store,
            )
        except BaseException:
            self.store.close()
            raise
        watch_sites(self.app.service.engine, self.app.service.metrics)
        try:
            # before anything is served: what a dead process left open ends now, its locks
            # are free, and the streams of its applies get their last event
            found = self.app.service.recover()
        except BaseException:
            self.app.service.close(0)
            self.store.close()
            raise
        if found:
            log.warning(
                "marked %d plan(s) and %d apply(ies) of stopped processes interrupted",
                len(found.plans),
                len(found.applies),
            )
        self.scheduler = Scheduler(
            self.app.service,
            poll_interval=config.poll_interval,
            drift_interval=config.drift_interval,
            prune_interval=config.retention_interval,
        )
        self._stop = threading.Event()
        self._waitress: Any = None

    @property
    def url(self) -> str:
        assert self._waitress is not None, "not listening"
        host = self.config.listen_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._waitress.effective_port}"

    def listen(self) -> str:
        """Open the listening socket (port 0: any free port); returns the base URL."""
        dispatcher = StreamingDispatcher(
            lambda path: _STREAM_PATH.fullmatch(path) is not None,
            self.config.max_event_streams + STREAM_THREAD_MARGIN,
        )
        dispatcher.set_thread_count(SERVER_THREADS)
        connections = self.config.max_event_streams + STREAM_THREAD_MARGIN + OTHER_CONNECTIONS
        _allow_open_files(connections + 100)  # + the store, Git, the providers' sockets
        # bounded body, head and chunk lines: see metalform.server.http_limits
        self._waitress = http_limits.create_server(
            self.app,
            host=self.config.listen_host,
            port=self.config.listen_port,
            threads=SERVER_THREADS,
            ident="metalform",
            clear_untrusted_proxy_headers=True,
            # every stream is a connection; select() cannot watch more than 1024 sockets
            connection_limit=connections,
            asyncore_use_poll=True,
            _dispatcher=dispatcher,
        )
        return self.url

    def run(self) -> None:
        """Serve until `stop()`; then shut everything down cleanly."""
        if self._waitress is None:
            self.listen()
        for line in describe(self.config):
            log.info("%s", line)
        log.info("metalform serving on %s", self.url)
        self.scheduler.start()
        socket_map = self._waitress._map
        try:
            # Our own loop instead of waitress' run(): it ends on a flag a signal handler may
            # set, and this thread then closes every socket it owns.
            while not self._stop.is_set():
                wasyncore.loop(timeout=0.2, map=socket_map, count=1, use_poll=True)
        finally:
            self._shutdown(socket_map)

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self, socket_map: dict[int, Any]) -> None:
        log.info("shutting down")
        # no new connections; not waitress' close(), which also closes the trigger that
        # stream threads still pull when they finish
        wasyncore.dispatcher.close(self._waitress)
        self.app.stopping.set()
        self.app.hub.close()  # event streams end; their threads return
        self._drain_streams(socket_map)
        self.scheduler.stop()
        self.app.service.close(SHUTDOWN_GRACE_SECONDS)
        self._waitress.task_dispatcher.shutdown(timeout=5)
        for dispatcher in list(socket_map.values()):
            dispatcher.close()  # the channels and the trigger
        self.store.close()
        log.info("stopped")

    def _drain_streams(self, socket_map: dict[int, Any]) -> None:
        """Keep the loop turning while stream threads finish, so their last bytes reach the
        clients and no channel is closed under a thread still writing to it."""
        dispatcher: StreamingDispatcher = self._waitress.task_dispatcher
        deadline = time.monotonic() + STREAM_DRAIN_SECONDS
        while dispatcher.stream_threads and time.monotonic() < deadline:
            wasyncore.loop(timeout=0.05, map=socket_map, count=1, use_poll=True)
        # one more turn: what the last thread wrote goes out
        wasyncore.loop(timeout=0.05, map=socket_map, count=1, use_poll=True)


def _allow_open_files(needed: int) -> None:
    """Raise the soft limit of open files (often 1024) toward `needed`, up to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open files limit to %d: %s", target, exc)
    if target < needed:
        log.warning("open files limited to %d: fewer event streams may be served", target)


def _log_to_stderr() -> None:
    logger = logging.getLogger("metalform")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def serve(
    config_path: Path | None,
    *,
    on_ready: Callable[[Server], None] | None = None,
    engine: Engine | None = None,
) -> int:
    """Run the server in this thread until SIGTERM or SIGINT."""
    _log_to_stderr()
    config = load_config(config_path)
    server = Server(config, engine)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s", signal.Signals(signum).name)
        server.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.listen()
        if on_ready is not None:
            on_ready(server)
        server.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
