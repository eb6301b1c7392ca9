"""What a provider did and must remember across runs: its journals.

A BMC shows neither which image a multipart push staged nor which password an account has,
so Metalform records what it did (never a secret: an image URL, a keyed fingerprint) and
reads it back at the next plan, also after a crash. The server keeps journals in its state
store (`ProviderContext.journals`), shared by its replicas; elsewhere (the CLI, a site
worker) they are files in the state directory of the machine.

A file journal is a file of JSON lines, one entry each, `{"key": ..., "at": ..., ...}`; the last
line of a key wins. Recording appends one line under an exclusive `flock`, so processes of
this machine (two applies, the workers of a site) lose nothing, and a fleet's worth of
records costs a line each, not a rewrite of the whole file. Readers follow the file's growth
by reading only what was appended since they last looked. Entries older than `keep_seconds`
are left out; the file is compacted (rewritten with one line per live key) when it holds
more than twice the lines it needs. A torn last line (a crash while appending) is skipped. A
process on another machine keeps its own journal.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reconciler.provider import Journal, ProviderContext

log = logging.getLogger("metalform.providers.journal")

COMPACT_SLACK = 1000
"""Lines beyond twice the live entries (and this many) make a load compact the file."""


def state_dir() -> Path:
    """`$XDG_STATE_HOME/metalform` (default `~/.local/state/metalform`)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "metalform"


def open_journal(
    context: ProviderContext, name: str, path: Path | None, *, keep_seconds: float | None = None
) -> Journal:
    """The journal `name`: where the context keeps journals (the server's state store), else
    the file `path` (None: memory only). Entries older than `keep_seconds` are the caller's to
    ignore; a file journal also leaves them out when it compacts."""
    if context.journals is not None:
        return context.journals(name)
    return FileJournal(path, keep_seconds=keep_seconds)


class FileJournal:
    """Entries by key in an append-only file; `path` None keeps them in memory only."""

    def __init__(self, path: Path | None, *, keep_seconds: float | None = None) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._offset = 0
        """How far the file has been read (it only grows, until it is compacted)."""
        self._identity: tuple[int, int] | None = None
        """The file's (device, inode) when last read: a compaction replaces it."""
        self._lines = 0
        """Lines read from the file, superseded ones included."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The newest entry recorded for `key` (by any process of this machine), or None."""
        with self._lock:
            self._follow()
            entry = self._entries.get(key)
        if entry is None or self._expired(entry):
            return None
        return entry

    def record(self, key: str, **entry: Any) -> None:
        """Append `entry` for `key`. A journal that cannot be written logs a warning: the
        action goes on, and only what depends on remembering it later is lost."""
        line = {"key": key, "at": time.time(), **entry}
        with self._lock:
            self._entries[key] = line
        if self.path is None:
            return
        try:
            with self._locked(), open(self.path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line, separators=(",", ":")) + "\n")
        except OSError as exc:
            log.warning("cannot record in %s: %s", self.path, exc)

    def _expired(self, entry: dict[str, Any]) -> bool:
        if self.keep_seconds is None:
            return False
        return float(entry.get("at", 0)) < time.time() - self.keep_seconds

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _follow(self) -> None:
        """Read what other processes appended since the last look (all of it, the first
        time or after a compaction)."""
        if self.path is None:
            return
        try:  # one stat per look when nothing changed (a plan looks once per BMC account)
            stat = os.stat(self.path)
        except OSError:
            return
        if (stat.st_dev, stat.st_ino) == self._identity and stat.st_size == self._offset:
            return
        try:
            with open(self.path, "rb") as source:
                stat = os.fstat(source.fileno())
                identity = (stat.st_dev, stat.st_ino)
                if identity != self._identity or stat.st_size < self._offset:
                    self._identity, self._offset, self._lines = identity, 0, 0
                    self._entries = {}
                if stat.st_size == self._offset:
                    return
                source.seek(self._offset)
                data = source.read()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("journal %s is unreadable (%s)", self.path, exc)
            return
        self._offset += self._parse(data)
        if self._lines > 2 * len(self._entries) + COMPACT_SLACK:
            self._compact()

    def _parse(self, data: bytes) -> int:
        """Take in the complete lines of `data`; how many bytes they were (a line still
        being appended waits for the next look)."""
        complete = data.rfind(b"\n") + 1
        for raw in data[:complete].splitlines():
            self._lines += 1
            try:
                entry = json.loads(raw)
            except ValueError:
                continue  # torn by a crash, or not ours
            if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                self._entries[entry["key"]] = entry
        return complete

    def _compact(self) -> None:
        assert self.path is not None
        try:
            with self._locked():
                # what was appended while we waited for the lock counts too
                with open(self.path, "rb") as source:
                    source.seek(self._offset)
                    self._parse(source.read())
                live = {k: v for k, v in self._entries.items() if not self._expired(v)}
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".journal-")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as out:
                        for entry in live.values():
                            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
                    os.replace(tmp, self.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:
            log.warning("cannot compact %s: %s", self.path, exc)
            return
        self._entries = live
        self._identity, self._offset, self._lines = None, 0, 0  # the next look reads it whole
