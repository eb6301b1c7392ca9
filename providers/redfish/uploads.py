"""What Metalform pushed to which BMC's update task: a journal on disk.

A multipart upload's task names no image (its Payload is the `UpdateParameters`: targets and
apply time, no `ImageURI`), so after a crash the next plan could not tell our staged upload
from anything else, and would upload the image again. Every push is therefore recorded as
soon as the BMC has answered with its task: the BMC, the task's path and start time, the
image's URL and SHA-256 (never a secret; the URL is the baseline's own). Reading a task with
no `ImageURI`, the provider looks it up here, so a push staged before a crash is planned as
the reset alone, as a SimpleUpdate's is.

The journal is `redfish-uploads.json` in `$XDG_STATE_HOME/metalform` (default
`~/.local/state/metalform`), or the file `extra["redfish.uploadJournal"]` names; entries older
than `KEEP_DAYS` are dropped. Writes are whole-file replacements under an exclusive `flock`,
so two applies at once lose nothing; a process on another machine (another site worker of
the same site, say) keeps its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("metalform.providers.redfish.uploads")

FILE = "redfish-uploads.json"
KEEP_DAYS = 30
MAX_ENTRIES = 100_000


def default_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "metalform" / FILE


def _key(endpoint: str, task: str, start: str | None) -> str:
    # A BMC may reuse a task id after its own restart: the start time tells them apart.
    return f"{endpoint} {task.rstrip('/')} {start or ''}"


class UploadJournal:
    """Pushed images by (BMC, task, start time); loaded from disk once per provider."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] | None = None

    def record(self, endpoint: str, task: str, start: str | None, image: str, sha256: str) -> None:
        """Remember that `task` on `endpoint` flashes `image` (before anything waits on it)."""
        entry = {"image": image, "sha256": sha256, "at": time.time()}
        key = _key(endpoint, task, start)
        with self._lock:
            if self._entries is not None:
                self._entries[key] = entry
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_suffix(".lock"), "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    entries = self._read()
                    entries[key] = entry
                    self._write(_pruned(entries))
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as exc:  # the flash goes on; only a crash before its reset would tell
            log.warning("cannot record the upload in %s: %s", self.path, exc)

    def image_of(self, endpoint: str, task: str, start: str | None) -> str | None:
        """The image a recorded push flashes, or None (not ours, or not recorded)."""
        with self._lock:
            if self._entries is None:
                self._entries = self._read() if self.path is not None else {}
            entry = self._entries.get(_key(endpoint, task, start))
        image = entry.get("image") if entry else None
        return image if isinstance(image, str) else None

    def _read(self) -> dict[str, dict[str, Any]]:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("upload journal %s is unreadable (%s); starting a new one", self.path, exc)
            return {}
        uploads = data.get("uploads") if isinstance(data, dict) else None
        return {k: v for k, v in (uploads or {}).items() if isinstance(v, dict)}

    def _write(self, entries: dict[str, dict[str, Any]]) -> None:
        assert self.path is not None
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".uploads-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"version": 1, "uploads": entries}, out)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _pruned(entries: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    oldest = time.time() - KEEP_DAYS * 86400
    kept = {k: v for k, v in entries.items() if float(v.get("at", 0)) >= oldest}
    if len(kept) > MAX_ENTRIES:
        newest = sorted(kept.items(), key=lambda kv: float(kv[1].get("at", 0)))[-MAX_ENTRIES:]
        kept = dict(newest)
    return kept
