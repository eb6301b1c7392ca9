"""What every lab peer process shares: liveness, its log, a clean stop of its group, and the
lifecycle of the peers run as Python modules (`ModulePeer`)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TypeVar


class PeerError(RuntimeError):
    """A lab peer could not be started, found, reached or stopped."""


def running_as(pid: int, marker: bytes) -> bool:
    """True when `pid` runs (not a zombie) with `marker` in its command line.

    The marker guards against a recycled pid: a pid file may outlive its process.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return marker in cmdline and bool(state) and state[0] != "Z"


def log_tail(path: Path, lines: int = 10) -> str:
    """The last lines of a peer's log, for the error that says why it did not start."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def stop_group(
    pid: int | None,
    is_running: Callable[[], bool],
    process: subprocess.Popen[bytes] | None,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float = 10.0,
) -> None:
    """Signal the peer's process group (it leads its own session), then SIGKILL if it lingers."""
    if pid is not None and is_running():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while is_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        if is_running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while is_running() and time.monotonic() < deadline:
                time.sleep(0.02)
    if process is not None:  # reap our own child, so it leaves no zombie
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def spawn_module(
    module: str,
    args: list[str],
    log_file: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Run `python -m module args` as a peer: its own session, output appended to `log_file`.

    The child imports `lab` even when this tree is not installed (a source checkout), and it
    outlives the caller (start_new_session) so `lab up` can return while the lab keeps running.
    """
    import sys

    environment = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, environment.get("PYTHONPATH")) if p
    )
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,
        )


ENDPOINT_FILE = "endpoint.json"
"""What a module peer writes once it listens: `{"host", "port", "pid"}` (port 0 -> the real one)."""

P = TypeVar("P", bound="ModulePeer")


class ModulePeer:
    """A lab peer run as `python -m <module>` in its own session; its files live in `state_dir`.

    `start` writes the configuration (`_prepare`), spawns the module, waits for its endpoint
    file to name the child and for `_probe` to succeed, then records the pid, so that `attach`
    from another process (`metalform lab down`) finds and stops it. Subclasses name the module,
    the pid and log files and what the peer is, and say how to probe it.
    """

    module: ClassVar[str]
    noun: ClassVar[str]
    """What the peer is, in messages: "MAAS simulator", "mail sink"."""
    pid_file: ClassVar[str]
    log_file: ClassVar[str]
    log_lines: ClassVar[int] = 10

    def __init__(self, state_dir: Path | str, *, host: str, port: int) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the lab binds loopback addresses only, not {host}")
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @classmethod
    def attach(cls: type[P], state_dir: Path | str) -> P:
        """The peer whose state is in `state_dir` (running or not), e.g. to stop it."""
        state = Path(state_dir).resolve()
        try:
            endpoint = json.loads((state / ENDPOINT_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PeerError(f"no {cls.noun} in {state}") from None
        peer = cls(state, host=endpoint["host"], port=int(endpoint["port"]))
        peer._adopt_pid()
        return peer

    def _adopt_pid(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError):
            self._pid = int((self.state_dir / self.pid_file).read_text().strip())

    @property
    def pid(self) -> int | None:
        return self._pid

    def start(self: P, timeout: float = 15.0) -> P:
        """Start the peer and wait until it answers."""
        if self.is_running():
            raise PeerError(f"a {self.noun} is already running from {self.state_dir}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / ENDPOINT_FILE).unlink(missing_ok=True)
        self._prepare()
        self._process = self._spawn()
        self._pid = self._process.pid
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._terminate(signal.SIGKILL)
            raise
        (self.state_dir / self.pid_file).write_text(f"{self._pid}\n")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the peer; its state stays in `state_dir` for the next start."""
        self._terminate(signal.SIGTERM, timeout)
        (self.state_dir / self.pid_file).unlink(missing_ok=True)

    def is_running(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._pid is not None and self._is_peer(self._pid)

    # -- what subclasses say -------------------------------------------------------------------

    def _prepare(self) -> None:
        """Write what the child reads at start (configuration, secrets)."""

    def _spawn(self) -> subprocess.Popen[bytes]:
        return spawn_module(
            self.module,
            ["--state-dir", str(self.state_dir), "--host", self.host, "--port", str(self.port)],
            self.state_dir / self.log_file,
        )

    def _probe(self) -> None:
        """Raise (OSError, ValueError) until the peer answers its protocol."""
        raise NotImplementedError

    def _is_peer(self, pid: int) -> bool:
        """`pid` is this kind of peer, still running (a pid file may outlive its process)."""
        return running_as(pid, self.module.encode())

    # -- plumbing ------------------------------------------------------------------------------

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise PeerError(
                    f"the {self.noun} exited with code "
                    f"{self._process.returncode}: {self._log_tail()}"
                )
            # requests' and smtplib's errors are OSErrors; a half-written file a ValueError.
            with contextlib.suppress(OSError, ValueError):
                endpoint = json.loads((self.state_dir / ENDPOINT_FILE).read_text())
                if endpoint.get("pid") == self._pid:
                    self.port = int(endpoint["port"])
                    self._probe()
                    return
            time.sleep(0.02)
        raise PeerError(f"the {self.noun} did not answer within {timeout:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        return log_tail(self.state_dir / self.log_file, self.log_lines)

    def _terminate(self, sig: signal.Signals, timeout: float = 10.0) -> None:
        stop_group(self._pid, self.is_running, self._process, sig, timeout)

    def __enter__(self: P) -> P:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secret_file(path: Path, given: str | None, make: Callable[[], str]) -> str:
    """The secret in `path` (mode 0600): `given`, else the one already there, else `make()`."""
    value = given
    if value is None and path.exists():
        value = path.read_text(encoding="utf-8").strip()
    if value is None:
        value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")
    return value


def watch_parent(parent: int) -> None:  # pragma: no cover - a background guard
    """In a peer: exit when the process that started it is gone (tests leave no orphans)."""

    def watch() -> None:
        while True:
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
