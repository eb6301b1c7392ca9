"""nova's own virtualenv: nova 34.0.0 and its ~100 dependencies, built once and reused.

They live apart from Metalform's environment: they would clash with its pins, and nova's
imports (eventlet, oslo) must never run in the test process. Building it twice at once (two
pytest workers) is guarded by a file lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from metalform.lab.process import PeerError, log_tail

NOVA_VERSION = "34.0.0"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "nova-venv"
"""Where the nova virtualenv is built, unless METALFORM_NOVA_VENV names another folder."""

READY_MARK = f".metalform-nova-{NOVA_VERSION}"


def venv_dir() -> Path:
    override = os.environ.get("METALFORM_NOVA_VENV")
    return Path(override).resolve() if override else DEFAULT_CACHE


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def ensure_venv(venv: Path | None = None, timeout: float = 900.0) -> Path:
    """Build nova's virtualenv once (`pip install nova==34.0.0`); return its python.

    A lock file next to it serializes builders: the second worker waits, then finds it ready.
    A build that failed halfway has no ready mark and is started over.
    """
    venv = (venv or venv_dir()).resolve()
    python = venv_python(venv)
    if (venv / READY_MARK).exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / READY_MARK).exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        log = venv.parent / f"{venv.name}-build.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            for command in (
                [sys.executable, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--quiet", f"nova=={NOVA_VERSION}"],
            ):
                done = subprocess.run(
                    command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout, check=False
                )
                if done.returncode != 0:
                    raise PeerError(f"building the nova virtualenv failed:\n{log_tail(log)}")
        (venv / READY_MARK).write_text(f"{time.monotonic() - started:.1f}\n")
    return python
