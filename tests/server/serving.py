"""`metalform serve` in a child process, and clients that follow its event streams.

The crash and stream tests need a real process (to SIGKILL it, to count its threads, to
survive a parser that kills it) and real sockets. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import queue
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from tests.server.harness import TOKENS, digest

CONFIG = """\
listen: 127.0.0.1:0
database: sqlite:///state/metalform.db
dataDir: state
repository: {{url: "{url}", branch: main, path: infra}}
pollInterval: 0
driftInterval: 0
tokens:
{tokens}
{extra}
"""


def write_config(path: Path, remote_url: str, extra: str = "") -> Path:
    tokens = "\n".join(
        f'  - {{name: {role}, role: {role}, sha256: "{digest(value)}"}}'
        for role, value in TOKENS.items()
    )
    path.write_text(CONFIG.format(url=remote_url, tokens=tokens, extra=extra), encoding="utf-8")
    return path


def auth(role: str = "operator") -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


class ServeProcess:
    """A server in a child process: its base URL and everything it logged."""

    def __init__(self, argv: list[str], cwd: Path, env: Mapping[str, str] | None = None) -> None:
        full_env = {**os.environ, "BMC_PASSWORD": "s3cret-for-tests", **(env or {})}
        full_env.pop("METALFORM_LISTEN", None)
        full_env.pop("METALFORM_DATABASE", None)
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base = self._wait_ready()

    @classmethod
    def metalform(cls, config: Path) -> ServeProcess:
        """`metalform serve --config CONFIG`, as users run it."""
        return cls(
            [sys.executable, "-m", "metalform.cli", "serve", "--config", str(config)], config.parent
        )

    @classmethod
    def memory(cls, config: Path, fleet_file: Path, block_at: int = 0) -> ServeProcess:
        """The server with the in-memory fleet of `serve_child` (see there)."""
        return cls(
            [
                sys.executable,
                "-m",
                "tests.server.serve_child",
                str(config),
                str(fleet_file),
                str(block_at),
            ],
            config.parent,
            {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._lines.put(line)

    def _drain(self) -> None:
        while True:
            try:
                self._seen.append(self._lines.get_nowait())
            except queue.Empty:
                return

    def _wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self._seen.append(line)
            match = re.search(r"serving on (http://127\.0\.0\.1:\d+)", line)
            if match:
                return match.group(1)
        self.kill()
        raise AssertionError("the server did not start:\n" + self.log())

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        self._drain()
        return "".join(self._seen)

    def terminate(self, timeout: float = 30.0) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait(10)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        if self.process.stderr is not None and not self.process.stderr.closed:
            self.process.stderr.close()
        self._drain()
        return code

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()  # also closes the pipe of a process that died on its own

    def get(self, path: str, role: str = "viewer", **kw: Any) -> requests.Response:
        return requests.get(
            self.base + path,
            headers={**auth(role), **kw.pop("headers", {})},
            timeout=kw.pop("timeout", 10),
            **kw,
        )

    def post(self, path: str, role: str = "operator", **kw: Any) -> requests.Response:
        return requests.post(
            self.base + path,
            headers={**auth(role), **kw.pop("headers", {})},
            timeout=kw.pop("timeout", 10),
            **kw,
        )

    def wait_status(self, path: str, statuses: set[str], timeout: float = 30.0) -> Any:
        """GET `path` until its `status` is one of `statuses`; the JSON."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            body = self.get(path).json()
            if body.get("status") in statuses:
                return body
            time.sleep(0.05)
        raise AssertionError(f"{path} stayed {body}")

    def plan(self) -> Any:
        created = self.post("/api/v1/plans", role="planner", json={"revision": "main"})
        assert created.status_code == 202, created.text
        return self.wait_status(
            f"/api/v1/plans/{created.json()['id']}", {"succeeded", "failed", "interrupted"}
        )


class Followers:
    """Many SSE clients on raw sockets, drained by one thread (cheap on the client side)."""

    def __init__(self, base: str, path: str, token: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.address = (host, int(port))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        self.selector = selectors.DefaultSelector()
        self.received: dict[socket.socket, bytearray] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._lock = threading.Lock()
        self._thread.start()

    def open(self, count: int) -> None:
        for _ in range(count):
            sock = socket.create_connection(self.address, timeout=10)
            sock.sendall(self.request)
            sock.setblocking(False)
            with self._lock:
                self.received[sock] = bytearray()
                self.selector.register(sock, selectors.EVENT_READ)

    def _drain(self) -> None:
        while not self._stop.is_set():
            # epoll: sockets may be registered while another thread waits in select
            ready = self.selector.select(timeout=0.05) if self.received else []
            if not ready:
                time.sleep(0.01)
                continue
            for key, _ in ready:
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                with self._lock:
                    if data:
                        self.received[sock] += data
                    else:
                        self.selector.unregister(sock)

    def streaming(self) -> int:
        """Followers whose response began with 200 and an event-stream."""
        with self._lock:
            return sum(
                1
                for data in self.received.values()
                if data.startswith(b"HTTP/1.1 200") and b"text/event-stream" in data
            )

    def texts(self) -> list[str]:
        with self._lock:
            return [bytes(data).decode("utf-8", "replace") for data in self.received.values()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in list(self.received):
            sock.close()
        self.selector.close()


def healthz_latencies(base: str, count: int) -> list[float]:
    """Seconds each of `count` GET /healthz took, each on a new connection (like a probe)."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        response = requests.get(base + "/healthz", timeout=30)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200
    return latencies


def percentile(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]
