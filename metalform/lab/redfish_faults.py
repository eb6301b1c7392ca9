"""Fault switches of a lab BMC: a JSON file the test side writes and the emulator re-reads.

A system (or the whole BMC, `ALL_SYSTEMS`, or its accounts, `AccountService`) can answer
HTTP 500, never answer, or ignore graceful power requests (`FaultKind`). `FaultBoard` is
that file: written atomically by the peer, read by the emulator only when it changed.
"""

from __future__ import annotations

import enum
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path

ALL_SYSTEMS = "*"
"""Fault target meaning every request to the BMC, the service root included."""


class FaultKind(str, enum.Enum):
    """What a faulty system does with the requests for it."""

    ERROR = "error"
    """Answer HTTP 500 to every request."""
    HANG = "hang"
    """Never answer (until the fault is cleared), so clients time out."""
    NO_GRACEFUL = "no-graceful"
    """Accept GracefulShutdown/GracefulRestart and ignore them (a hung OS)."""
    ECHO = "echo"
    """Answer HTTP 500 quoting the request's Authorization header (a careless BMC)."""


class FaultBoard:
    """The fault switches of one lab BMC: a JSON file the emulator re-reads when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int] | None = None
        self._faults: dict[str, str] = {}

    def current(self) -> dict[str, str]:
        """Faults by system identity (or `*`); re-read only when the file changed."""
        try:
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._seen:
                self._faults = self._load() if stamp is not None else {}
                self._seen = stamp
            return self._faults

    def fault_for(self, identity: str | None) -> str | None:
        """The fault of a system (or of the whole BMC), if any."""
        faults = self.current()
        if not faults:
            return None
        return faults.get(identity or "", faults.get(ALL_SYSTEMS))

    def write(self, faults: Mapping[str, str]) -> None:
        """Replace every fault at once (atomically: the emulator never reads half a file)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"faults": dict(faults)}), encoding="utf-8")
        os.replace(tmp, self.path)

    def _load(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        faults = data.get("faults", {}) if isinstance(data, dict) else {}
        return {str(k): str(v) for k, v in faults.items()}
