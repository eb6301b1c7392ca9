"""`metalform serve`: the API on waitress, the background loop, and a clean shutdown.

SIGTERM or SIGINT stops accepting connections, ends event streams, lets running plans and
applies finish (up to a grace period; an apply holds its lock until it is recorded finished),
and closes the store.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import waitress
from waitress import wasyncore

from reconciler.api.app import MetalformApp, create_app
from reconciler.engine import Engine
from reconciler.server.config import ServerConfig, describe, load_config
from reconciler.server.drift import Scheduler
from reconciler.store import Store

log = logging.getLogger("metalform.server")

SHUTDOWN_GRACE_SECONDS = 60.0
SERVER_THREADS = 16


class Server:
    """The running server: app, waitress listener and background loop."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.store = Store.open(config.database)
        try:
            self.app: MetalformApp = create_app(config, engine or Engine(), self.store)
        except BaseException:
            self.store.close()
            raise
        try:
            # before anything is served: what a dead process left open ends now, its locks
            # are free, and the streams of its applies get their last event
            found = self.app.service.recover()
        except BaseException:
            self.app.service.close(0)
            self.store.close()
            raise
        if found:
            log.warning("marked %d plan(s) and %d apply(ies) of stopped processes interrupted",
                        len(found.plans), len(found.applies))
        self.scheduler = Scheduler(self.app.service, poll_interval=config.poll_interval,
                                   drift_interval=config.drift_interval)
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
        self._waitress = waitress.create_server(
            self.app, host=self.config.listen_host, port=self.config.listen_port,
            threads=SERVER_THREADS, ident="metalform", clear_untrusted_proxy_headers=True)
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
                wasyncore.loop(timeout=0.2, map=socket_map, count=1)
        finally:
            self._shutdown(socket_map)

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self, socket_map: dict[int, Any]) -> None:
        log.info("shutting down")
        self._waitress.close()  # no new connections
        self.app.stopping.set()  # event streams end
        self.scheduler.stop()
        self.app.service.close(SHUTDOWN_GRACE_SECONDS)
        for dispatcher in list(socket_map.values()):
            dispatcher.close()
        self._waitress.task_dispatcher.shutdown(timeout=5)
        self.store.close()
        log.info("stopped")


def _log_to_stderr() -> None:
    logger = logging.getLogger("metalform")
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def serve(config_path: Path | None, *,
          on_ready: Callable[[Server], None] | None = None) -> int:
    """Run the server in this thread until SIGTERM or SIGINT."""
    _log_to_stderr()
    config = load_config(config_path)
    server = Server(config)

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
