"""`metalform serve`'s `Server` (waitress, the app, SQLite) in a thread, and a raw HTTP client.

The hostile-request tests need what the Falcon test client skips: waitress's parsing of the
request line, headers and chunked bodies, over a real loopback socket.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from metalform.server.config import config_from_mapping
from metalform.server.serve import Server
from providers.memory import memory_factory
from reconciler.engine import Engine
from tests.fixtures.ordering import fleet
from tests.server.harness import GitRemote, config_mapping


@dataclass
class Live:
    """A listening server: its address, and the thread that runs waitress's socket loop."""

    server: Server
    host: str
    port: int
    loop: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def loop_cpu_seconds(self) -> float:
        """CPU time of the thread that reads every socket (waitress's receivers run there)."""
        assert self.loop.ident is not None
        return time.clock_gettime(time.pthread_getcpuclockid(self.loop.ident))


def live_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    monkeypatch.setenv("BMC_PASSWORD", "s3cret-for-tests")
    monkeypatch.setenv("TEST_GITHUB_SECRET", "gh-secret-live")
    monkeypatch.setenv("TEST_GITLAB_SECRET", "gl-secret-live")
    remote = GitRemote(tmp_path)
    config = config_from_mapping(
        config_mapping(remote, tmp_path, None), base_dir=tmp_path, environ={}
    )
    factory = memory_factory(fleet())
    server = Server(config, Engine(factories={"redfish": factory, "ipmi": factory}))
    server.listen()
    loop = threading.Thread(target=server.run, name="waitress-loop", daemon=True)
    loop.start()
    port = int(server.url.rsplit(":", 1)[1])
    try:
        yield Live(server, "127.0.0.1", port, loop)
    finally:
        server.stop()
        loop.join(timeout=30)
        assert not loop.is_alive(), "the server did not stop"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(raw: bytes) -> Answer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    return Answer(status, headers, body[: int(length)] if length else body)


def exchange(
    live: Live, request: bytes, *, then: bytes = b"", repeat: int = 0, timeout: float = 10.0
) -> tuple[Answer, int]:
    """Send `request`, then `then` up to `repeat` times until the server answers; returns
    the answer and how many bytes were sent in all."""
    with socket.create_connection((live.host, live.port), timeout=timeout) as conn:
        sent = 0
        try:
            conn.sendall(request)
            sent += len(request)
            for _ in range(repeat):
                # stop once the server answered: it refused the request and will close
                if select.select([conn], [], [], 0)[0]:
                    break
                conn.sendall(then)
                sent += len(then)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the answer may be in the buffer
        received = b""
        while not _complete(received):
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    assert received, "the server closed the connection without an answer"
    return parse(received), sent


def _complete(raw: bytes) -> bool:
    if b"\r\n\r\n" not in raw:
        return False
    answer = parse(raw)
    length = answer.headers.get("content-length")
    return length is not None and len(raw.partition(b"\r\n\r\n")[2]) >= int(length)
