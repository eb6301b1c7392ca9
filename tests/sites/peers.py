"""Real peers for the sites tests: a redis-server and `metalform worker` processes."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

TASK_KEY = "sites-test-task-key"
WORKER = [sys.executable, "-m", "metalform.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports, below the ephemeral range (where
    the kernel hands out the ports of outgoing connections, so a block there gets taken)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 30000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass
class RedisPeer:
    """A redis-server on loopback, no persistence; fails loudly when it cannot start. With
    `tls`, it speaks only TLS (a self-signed certificate, its own CA: `ca_file`)."""

    directory: Path
    port: int = field(default_factory=free_port)
    tls: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> Path:
        return self.directory / "cert.pem"

    def client(self) -> redis.Redis:
        tls = {"ssl_ca_certs": str(self.ca_file)} if self.tls else {}
        return redis.Redis.from_url(self.url, socket_timeout=5, **tls)

    def start(self) -> RedisPeer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        listen = ["--port", str(self.port)]
        if self.tls:
            from metalform.lab.farm.tls import certificate

            cert, key = certificate()
            self.ca_file.write_bytes(cert)
            (self.directory / "key.pem").write_bytes(key)
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.ca_file),
                "--tls-key-file", str(self.directory / "key.pem"),
                "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        with (self.directory / "redis.log").open("wb") as log:
            self.process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                *listen,
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"redis-server did not start: {log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


RABBIT_USER = "metalform"


@dataclass
class RabbitPeer:
    """A RabbitMQ node of its own on loopback (Debian's rabbitmq-server, run as this user:
    the /usr/sbin wrapper would switch to the rabbitmq user), its data in `directory`."""

    directory: Path
    password: str = field(default_factory=lambda: "rabbit-" + os.urandom(8).hex())
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL; the password goes separately, as Metalform requires."""
        return f"amqp://{RABBIT_USER}@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 60.0) -> RabbitPeer:
        binary = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        if not binary.exists():
            raise RuntimeError("rabbitmq-server is not installed (Debian package rabbitmq-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        base = free_ports(2)
        self.port = base
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"default_user = {RABBIT_USER}\n"
            f"default_pass = {self.password}\n"
            "log.console = true\nlog.file = false\n"
        )
        (self.directory / "enabled_plugins").write_text("[].\n")
        d = self.directory
        env = {
            **os.environ,
            "HOME": str(d),  # the Erlang cookie
            "RABBITMQ_NODENAME": f"metalform-test-{os.getpid()}-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_DIST_PORT": str(base + 1),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(d / "feature_flags"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins-expand"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        }
        with (d / "rabbitmq.out").open("wb") as log:
            self.process = subprocess.Popen(
                [str(binary)], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:  # the AMQP listener opens last, once the broker has booted
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.2)
        out = (d / "rabbitmq.out").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"rabbitmq-server did not start: {out}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@dataclass
class WorkerProcess:
    """`metalform worker --site SITE`, its secrets in its own environment only."""

    site: str
    broker: str
    env: Mapping[str, str]
    log: Path
    visibility_timeout: float = 3600.0
    args: tuple[str, ...] = ()
    """More `metalform worker` options (a RabbitMQ broker's password and backend)."""
    process: subprocess.Popen[bytes] | None = None

    def start(self, client: redis.Redis, timeout: float = 30.0) -> WorkerProcess:
        env = {**os.environ, **self.env, "METALFORM_TASK_KEY": TASK_KEY}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *WORKER, "worker", "--site", self.site, "--broker", self.broker,
                    "--concurrency", "4", "--visibility-timeout", str(self.visibility_timeout),
                    *self.args,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        pattern = f"metalform:worker:{self.site}:*.{self.process.pid}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if list(client.scan_iter(match=pattern)):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker {self.site} did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no warm shutdown, no ack, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Monitor:
    """Every command Redis receives while it runs (MONITOR), for reading raw messages."""

    def __init__(self, peer: RedisPeer) -> None:
        self.peer = peer
        self.commands: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        client = self.peer.client()
        try:
            with client.monitor() as monitor:
                self._ready.set()
                for event in monitor.listen():
                    self.commands.append(str(event["command"]))
                    if self._stop.is_set():
                        return
        finally:
            client.close()

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        poke = self.peer.client()
        poke.ping()  # wakes the listener so it sees the stop
        poke.close()
        self._thread.join(timeout=5)

    def messages(self) -> list[str]:
        """The commands, with every base64 message body (kombu's encoding) decoded and, when
        compressed (tasks are), decompressed. Replies go compressed only past COMPRESS_OVER,
        which the tests' few lab servers stay under: they show here as sent."""
        decoded = list(self.commands)
        for command in self.commands:
            for match in re.finditer(r'"body": "([A-Za-z0-9+/=]+)"', command.replace("\\", "")):
                body = base64.b64decode(match.group(1))
                with contextlib.suppress(zlib.error):
                    body = zlib.decompress(body)
                decoded.append(body.decode(errors="replace"))
        return decoded
