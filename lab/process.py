"""What every lab peer process shares: liveness, its log, and a clean stop of its group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


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
        p for p in (root, environment.get("PYTHONPATH")) if p)
    with open(log_file, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=environment, cwd=cwd, start_new_session=True,
        )
