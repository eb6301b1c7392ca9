"""BIOS attribute registries: found once per model for the whole fleet, kept on disk.

Every BMC of a model publishes the same attribute registry, named by its Bios resource
(`AttributeRegistry`: `<Name>.<version>`). Reading it costs three requests and the parsing of
a document of hundreds of entries, so it is read from one BMC per (registry, manufacturer,
model) and shared by the others in the run. The registry facts are also kept on disk between
runs (`$XDG_CACHE_HOME/metalform/redfish-registries`, else `~/.cache/metalform/...`, or
`$METALFORM_CACHE_DIR/redfish-registries`), one file
per key, holding the key and a SHA-256 of the facts: an entry whose key is not the one asked
for (a foreign file) or whose digest does not match (a corrupted one) is ignored and refetched.
The key includes the manufacturer and model because some vendors publish one registry id with
different attributes per model; a new BIOS version names a new registry version, hence a
new key, so a cached registry is never used for a changed id or version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from providers.redfish import mapping

log = logging.getLogger("metalform.providers.redfish")

FORMAT = 1
REGISTRY_ABSENT_FOR = 300.0
"""A BMC that published no matching attribute registry is asked again after this long."""
REGISTRIES_PATH = "/redfish/v1/Registries"
"""Where a Redfish service publishes its registries (fixed by the specification)."""

Facts = dict[str, dict[str, Any]]
GetJson = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class RegistryKey:
    name: str
    """`AttributeRegistry` of the Bios resource: id and version."""
    manufacturer: str
    model: str

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "manufacturer": self.manufacturer, "model": self.model}

    def file_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()
        return f"{digest[:32]}.json"


def default_cache_dir() -> Path:
    """`$METALFORM_CACHE_DIR`, else `$XDG_CACHE_HOME/metalform`, else `~/.cache/metalform`."""
    base = os.environ.get("METALFORM_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "metalform")
    return Path(base) / "redfish-registries"


def _digest(facts: Facts) -> str:
    body = json.dumps(facts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class DiskCache:
    """Registry facts on disk, verified on every read."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def load(self, key: RegistryKey) -> Facts | None:
        if self.directory is None:
            return None
        path = self.directory / key.file_name()
        try:
            entry = json.loads(path.read_bytes())
            if entry.get("format") != FORMAT or entry.get("key") != key.as_json():
                log.warning("registry cache %s is not %s; refetching it", path, key.name)
                return None
            facts = entry.get("facts")
            if not isinstance(facts, dict) or _digest(facts) != entry.get("sha256"):
                log.warning("registry cache %s is corrupted; refetching it", path)
                return None
            return facts
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            log.warning("registry cache %s is unreadable; refetching it", path)
            return None

    def store(self, key: RegistryKey, facts: Facts) -> None:
        if self.directory is None:
            return
        entry = {"format": FORMAT, "key": key.as_json(), "sha256": _digest(facts), "facts": facts}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Written aside and renamed: a concurrent reader sees the old entry or the new one.
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(entry, fh, separators=(",", ":"))
            os.replace(tmp, self.directory / key.file_name())
        except OSError as exc:
            log.info("cannot keep registry %s in %s: %s", key.name, self.directory, exc)


class Registries:
    """Registry facts by key for one provider's lifetime, backed by the disk cache."""

    def __init__(self, disk: DiskCache) -> None:
        self.disk = disk
        self._lock = threading.Lock()
        self._locks: dict[object, threading.Lock] = {}
        self._facts: dict[RegistryKey, Facts] = {}
        self._absent: dict[tuple[str, str], float] = {}
        self.from_disk: set[RegistryKey] = set()
        """Registries this run took from the disk cache (the plan says so)."""
        self.fetched: set[RegistryKey] = set()

    def came_from_disk(self, name: str, manufacturer: str | None, model: str | None) -> bool:
        return RegistryKey(name, manufacturer or "", model or "") in self.from_disk

    def _key_lock(self, key: object) -> threading.Lock:
        with self._lock:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def get(self, key: RegistryKey, endpoint: str, fetch: Callable[[], Facts | None]) -> Any:
        """The facts of `key`: from this run, the disk, or `fetch` (from this BMC)."""
        facts = self._facts.get(key)
        if facts is not None:
            return facts
        absent_at = self._absent.get((endpoint, key.name))
        if absent_at is not None and time.monotonic() - absent_at < REGISTRY_ABSENT_FOR:
            return None
        # One BMC of the model reads it; the others of that model wait for its answer.
        with self._key_lock(key):
            facts = self._facts.get(key)
            if facts is not None:
                return facts
            facts = self.disk.load(key)
            if facts is not None:
                self.from_disk.add(key)
            else:
                facts = fetch()
                if facts is None:
                    self._absent[(endpoint, key.name)] = time.monotonic()
                    return None
                self.fetched.add(key)
                self.disk.store(key, facts)
            self._facts[key] = facts
            return facts


def find_registry(get_json: GetJson, name: str) -> Facts | None:
    """Walk /redfish/v1/Registries to the attribute registry `name` (as sushy does)."""
    members = [m.get("@odata.id", "") for m in get_json(REGISTRIES_PATH).get("Members", [])]
    stem = name.split(".", 1)[0].lower()

    def likely(path: str) -> bool:
        leaf = path.rstrip("/").rsplit("/", 1)[-1].lower()
        return "bios" in leaf or leaf.startswith(stem) or stem.startswith(leaf.split(".")[0])

    # Only the files that look like the BIOS registry are opened: message registries are
    # large and a BMC publishes dozens of them.
    for path in [m for m in members if m and likely(m)]:
        registry_file = get_json(path)
        for location in registry_file.get("Location", []):
            uri = location.get("Uri")
            language = str(location.get("Language", "en")).lower()
            if not uri or language.split("-")[0] not in ("en", "default"):
                continue
            doc = get_json(uri)
            if not str(doc.get("@odata.type", "")).endswith("AttributeRegistry"):
                continue
            names = {doc.get("Id"), registry_file.get("Id"), registry_file.get("Registry")}
            if name in names or len(members) == 1:
                entries = doc.get("RegistryEntries", {}).get("Attributes", [])
                return mapping.registry_facts(entries)
    return None
