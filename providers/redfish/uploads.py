"""What Metalform pushed to which BMC's update task.

A multipart upload's task names no image (its Payload is the `UpdateParameters`: targets and
apply time, no `ImageURI`), so after a crash the next plan could not tell our staged upload
from anything else, and would upload the image again. Every push is therefore recorded as
soon as the BMC has answered with its task: the BMC, the task's path and start time, the
image's URL and SHA-256 (never a secret; the URL is the baseline's own). Reading a task with
no `ImageURI`, the provider looks it up here, so a push staged before a crash is planned as
the reset alone, as a SimpleUpdate's is.

The journal (see `providers.journal`) is `redfish-uploads`: in the server's state store, else
the file `redfish-uploads.jsonl` in `$XDG_STATE_HOME/metalform` (default
`~/.local/state/metalform`) or the one `extra["redfish.uploadJournal"]` names. Entries older
than `KEEP_DAYS` are forgotten.
"""

from __future__ import annotations

import time
from pathlib import Path

from providers.journal import state_dir
from reconciler.provider import Journal

NAME = "redfish-uploads"
FILE = f"{NAME}.jsonl"
KEEP_DAYS = 30
KEEP_SECONDS = KEEP_DAYS * 86400


def default_path() -> Path:
    return state_dir() / FILE


def _key(endpoint: str, task: str, start: str | None) -> str:
    # A BMC may reuse a task id after its own restart: the start time tells them apart.
    return f"{endpoint} {task.rstrip('/')} {start or ''}"


class UploadJournal:
    """Pushed images by (BMC, task, start time)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    def record(self, endpoint: str, task: str, start: str | None, image: str, sha256: str) -> None:
        """Remember that `task` on `endpoint` flashes `image` (before anything waits on it)."""
        self._journal.record(_key(endpoint, task, start), image=image, sha256=sha256)

    def image_of(self, endpoint: str, task: str, start: str | None) -> str | None:
        """The image a recorded push flashes, or None (not ours, or not recorded)."""
        entry = self._journal.get(_key(endpoint, task, start))
        if entry is None or float(entry.get("at", 0)) < time.time() - KEEP_SECONDS:
            return None
        image = entry.get("image")
        return image if isinstance(image, str) else None
