"""Throttle windows that outlive the process: `metalform plan --notify` runs one after the
other share them, so a rule's `throttle` holds across runs, and the first run after a window
ends sends its digest.

The windows are kept in the state store when the run names one (`--database`,
`METALFORM_DATABASE`), else as JSON in a small state file
(`$XDG_STATE_HOME/metalform/throttle.json`, default `~/.local/state/metalform/`) read and
written under an exclusive `flock`; either way two runs at once neither lose nor double a
count. Times are wall-clock seconds: a monotonic clock means nothing to the next process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from metalform.notify.event import Event, EventResource
from metalform.store import Store, throttle
from reconciler.model.events import EventType

log = logging.getLogger("metalform.notify")
STATE_FILE = "throttle.json"
MAX_HELD = 100


def default_path(environ: dict[str, str] | None = None) -> Path:
    """`$XDG_STATE_HOME/metalform/throttle.json` (XDG's default: `~/.local/state`)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "metalform" / STATE_FILE


@dataclass
class Window:
    """A rule's open throttle window (the router's in-process state, serialisable)."""

    opened: float
    """When it opened: the router's clock (wall-clock seconds when kept in a file)."""
    opened_at: datetime
    sent: int = 0
    suppressed: int = 0
    held: list[Event] = field(default_factory=list)


def _event_data(event: Event) -> dict[str, Any]:
    """What a digest shows of a held event (its type, time, ids, resources and message)."""
    return {
        "type": event.type.value,
        "time": event.time.isoformat(),
        "repository": event.repository,
        "revision": event.revision,
        "planId": event.plan_id,
        "applyId": event.apply_id,
        "addresses": event.addresses,
        "message": event.message,
    }


def _event(data: dict[str, Any]) -> Event:
    return Event(
        type=EventType(data["type"]),
        time=datetime.fromisoformat(data["time"]),
        repository=data.get("repository"),
        revision=data.get("revision"),
        plan_id=data.get("planId"),
        apply_id=data.get("applyId"),
        resources=tuple(EventResource(str(a)) for a in data.get("addresses") or []),
        message=str(data.get("message") or ""),
    )


def dump(windows: dict[str, Window]) -> dict[str, Any]:
    return {
        name: {
            "opened": w.opened,
            "openedAt": w.opened_at.isoformat(),
            "sent": w.sent,
            "suppressed": w.suppressed,
            "held": [_event_data(e) for e in w.held[:MAX_HELD]],
        }
        for name, w in windows.items()
    }


def load(data: dict[str, Any]) -> dict[str, Window]:
    windows = {}
    for name, item in data.items():
        windows[name] = Window(
            opened=float(item["opened"]),
            opened_at=datetime.fromisoformat(item["openedAt"]),
            sent=int(item["sent"]),
            suppressed=int(item["suppressed"]),
            held=[_event(e) for e in item.get("held", [])],
        )
    return windows


class ThrottleState(Protocol):
    """Where a Notifier keeps its windows between runs."""

    def clock(self) -> float: ...

    def windows(self) -> AbstractContextManager[dict[str, Window]]: ...


class StoreThrottleState:
    """Windows in the state store (`throttle_windows`), one scope per desired state."""

    clock = staticmethod(time.time)

    def __init__(self, store: Store, scope: str) -> None:
        self.store = store
        self.scope = scope

    @contextmanager
    def windows(self) -> Iterator[dict[str, Window]]:
        with throttle.windows(self.store, self.scope) as stored:
            found = load(stored)
            yield found
            stored.clear()
            stored.update(dump(found))


class FileThrottleState:
    """Windows in a JSON file, one scope (the repository) per key prefix."""

    clock = staticmethod(time.time)

    def __init__(self, path: Path, scope: str = "") -> None:
        self.path = path
        self.scope = scope

    @contextmanager
    def windows(self) -> Iterator[dict[str, Window]]:
        """The scope's windows, locked; what the caller leaves in the dict is saved."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                everything = self._read()
                prefix = f"{self.scope}\x00"
                mine = {
                    k.removeprefix(prefix): v for k, v in everything.items() if k.startswith(prefix)
                }
                windows = load(mine)
                yield windows
                others = {k: v for k, v in everything.items() if not k.startswith(prefix)}
                saved = {**others, **{prefix + k: v for k, v in dump(windows).items()}}
                self._write(saved)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # a damaged file costs one window's throttling, never the run
            log.warning("ignoring unreadable throttle state %s: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data), encoding="utf-8")
        os.replace(temporary, self.path)
