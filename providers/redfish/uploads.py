"""What Metalform pushed to which BMC's update task.

A multipart upload's task names no image (its Payload is the `UpdateParameters`: targets and
apply time, no `ImageURI`), so after a crash the next plan could not tell our staged upload
from anything else, and would upload the image again. Every push is therefore recorded as
soon as the BMC has answered with its task: the BMC, the task's path and start time, the
image's URL and SHA-256 (never a secret; the URL is the baseline's own). Reading a task with
no `ImageURI`, the provider looks it up here, so a push staged before a crash is planned as
the reset alone, as a SimpleUpdate's is.

The journal (see `providers.journal`) is `redfish-uploads.jsonl` in
`$XDG_STATE_HOME/metalform` (default `~/.local/state/metalform`), or the file
`extra["redfish.uploadJournal"]` names; entries older than `KEEP_DAYS` are forgotten.
"""

from __future__ import annotations

from pathlib import Path

from providers.journal import Journal, state_dir

FILE = "redfish-uploads.jsonl"
KEEP_DAYS = 30


def default_path() -> Path:
    return state_dir() / FILE


def _key(endpoint: str, task: str, start: str | None) -> str:
    # A BMC may reuse a task id after its own restart: the start time tells them apart.
    return f"{endpoint} {task.rstrip('/')} {start or ''}"


class UploadJournal:
    """Pushed images by (BMC, task, start time)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._journal = Journal(path, keep_seconds=KEEP_DAYS * 86400)

    def record(self, endpoint: str, task: str, start: str | None, image: str, sha256: str) -> None:
        """Remember that `task` on `endpoint` flashes `image` (before anything waits on it)."""
        self._journal.record(_key(endpoint, task, start), image=image, sha256=sha256)

    def image_of(self, endpoint: str, task: str, start: str | None) -> str | None:
        """The image a recorded push flashes, or None (not ours, or not recorded)."""
        entry = self._journal.get(_key(endpoint, task, start))
        image = entry.get("image") if entry else None
        return image if isinstance(image, str) else None
