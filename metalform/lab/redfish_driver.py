"""The lab's systems driver for sushy-emulator: the stock fake driver plus BIOS and honest timing.

sushy-tools' `FakeDriver` answers 501 for BIOS, ignores `BootSourceOverrideEnabled` and applies
power changes after a random 1-11 s. `LabDriver` keeps, per system, current and pending BIOS
attributes (validated against the lab's attribute registry, as a BMC would), applies the
pending ones at the next power-on or restart, honours one-time boot overrides, and applies
power changes after a fixed, configurable delay. State lives in memory and is written through
to SQLite in the emulator's state directory, so restarts keep it.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sushy_tools import error
from sushy_tools.emulator.resources.systems.fakedriver import FakeDriver

from metalform.lab import redfish_firmware as fw
from metalform.lab.redfish import BiosAttribute, FaultBoard, FaultKind

BOOT_OVERRIDE_ENABLED = ("Disabled", "Once", "Continuous")
_ON_STATES = ("On", "ForceOn")
_OFF_STATES = ("ForceOff", "GracefulShutdown")
_RESTART_STATES = ("ForceRestart", "GracefulRestart", "PowerCycle")
_GRACEFUL = ("GracefulShutdown", "GracefulRestart")


class _Store:
    """System documents as JSON rows in SQLite; used under the driver's lock only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.execute("create table if not exists systems (id text primary key, doc text)")

    def load(self) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("select id, doc from systems").fetchall()
        return {row[0]: json.loads(row[1]) for row in rows}

    def save(self, docs: Iterable[dict[str, Any]]) -> None:
        with self._db:  # one transaction for a batch: seeding 1,000 systems stays fast
            self._db.executemany(
                "insert or replace into systems values (?, ?)",
                [(d["uuid"], json.dumps(d)) for d in docs],
            )

    def delete_except(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        stale = [(k,) for (k,) in self._db.execute("select id from systems") if k not in keep]
        if stale:
            with self._db:
                self._db.executemany("delete from systems where id = ?", stale)


class LabDriver(FakeDriver):  # type: ignore[misc]
    """sushy-emulator's fake driver with BIOS settings, fixed power delay and persistence."""

    _config: dict[str, Any]

    @classmethod
    def initialize(cls, config: dict[str, Any], logger: Any) -> type[LabDriver]:
        """Bind the app config (sushy-emulator calls this before instantiating)."""
        config.setdefault("SUSHY_EMULATOR_FAKE_SYSTEMS", [])
        cls._config = config
        cls._logger = logger
        return cls

    def __init__(self) -> None:
        # FakeDriver.__init__ would open its pickle store; this driver keeps its own.
        lab = self._config["LAB"]
        self._lock = threading.RLock()
        self._delay = float(lab.get("powerDelay", 0.2))
        self._registry = {
            a.name: a for a in (BiosAttribute.from_json(x) for x in lab["biosRegistry"])
        }
        self._faults = FaultBoard(Path(lab["faultsFile"]))
        self.firmware_settings = fw.UpdateSettings(float(lab.get("updateSeconds", 2.0)))
        self._firmware = lab.get("firmware", fw.DEFAULT_FIRMWARE)
        self.images_dir = Path(lab["faultsFile"]).parent / fw.IMAGES_DIR
        state_dir = Path(self._config["SUSHY_EMULATOR_STATE_DIR"])
        self._store = _Store(state_dir / "lab-systems.sqlite")
        self._systems = self._seed(self._config["SUSHY_EMULATOR_FAKE_SYSTEMS"])
        self._order = [s["uuid"] for s in self._config["SUSHY_EMULATOR_FAKE_SYSTEMS"]]
        self._by_name = {s["name"]: uuid for uuid, s in self._systems.items()}

    def _seed(self, configured: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        stored = self._store.load()
        systems: dict[str, dict[str, Any]] = {}
        defaults = {name: a.default for name, a in self._registry.items()}
        for entry in configured:
            old = stored.get(entry["uuid"])
            if old is None:
                doc = copy.deepcopy(entry)
                doc["bios"] = {**defaults, **entry.get("bios", {})}
                doc.update(bios_pending={}, boot_enabled="Continuous", pending_power=None)
            else:
                # Power, boot and BIOS are state and survive a restart; what the hardware is
                # (name, manufacturer, model) comes from the config.
                doc = old
                for key in ("name", "manufacturer", "model"):
                    doc[key] = entry.get(key, doc.get(key))
                doc["bios"] = {**defaults, **doc.get("bios", {})}
            fw.seed_firmware(doc, self._firmware)
            systems[entry["uuid"]] = doc
        self._store.save(systems.values())
        self._store.delete_except(systems)
        return systems

    # -- FakeDriver plumbing -----------------------------------------------------------------

    def _get(self, identity: str) -> dict[str, Any]:
        with self._lock:
            return super()._get(identity)  # type: ignore[no-any-return]

    def _update(self, system: dict[str, Any] | str, **changes: Any) -> None:
        with self._lock:
            if isinstance(system, str):
                system = self._get(system)
            system.update(changes)
            self._systems[system["uuid"]] = system
            self._store.save([system])

    def _update_if_needed(self, system: dict[str, Any]) -> dict[str, Any]:
        pending = system.get("pending_power")
        if pending and time.time() >= pending["apply_time"]:
            changes: dict[str, Any] = {"power_state": pending["power_state"], "pending_power": None}
            if pending["power_state"] == "On":
                # The machine boots: staged BIOS settings take effect, a one-time boot
                # override is used up.
                changes["bios"] = {**system["bios"], **system.get("bios_pending", {})}
                changes["bios_pending"] = {}
                if system.get("boot_enabled") == "Once":
                    changes["boot_enabled"] = "Disabled"
                fw.activate_staged(system)
            self._update(system, **changes)
        return system

    @property
    def driver(self) -> str:
        return "<metalform-lab>"

    @property
    def systems(self) -> list[str]:
        return list(self._order)

    # -- power -------------------------------------------------------------------------------

    def set_power_state(self, identity: str, state: str) -> None:
        """Start a power transition that completes after the configured delay."""
        with self._lock:
            system = self._get(identity)
            if state in _GRACEFUL and self._faults.fault_for(identity) == FaultKind.NO_GRACEFUL:
                self._logger.info("ignoring %s for %s (no-graceful fault)", state, identity)
                return
            if state in _ON_STATES:
                target = "On"
            elif state in _OFF_STATES:
                target = "Off"
            elif state in _RESTART_STATES:
                # A restart passes through Off; an Off machine simply boots.
                system["power_state"] = "Off"
                target = "On"
            elif state == "Nmi":
                return
            else:
                raise error.NotSupportedError(f"Power state {state} is not supported")
            if system["power_state"] == target and state not in _RESTART_STATES:
                self._update(system, pending_power=None)
                return
            self._update(
                system,
                power_state=system["power_state"],
                pending_power={"power_state": target, "apply_time": time.time() + self._delay},
            )

    # -- boot override -----------------------------------------------------------------------

    def get_boot_enabled(self, identity: str) -> str:
        """BootSourceOverrideEnabled: Disabled, Once or Continuous."""
        return str(self._get(identity).get("boot_enabled", "Continuous"))

    def set_boot_enabled(self, identity: str, enabled: str) -> None:
        if enabled not in BOOT_OVERRIDE_ENABLED:
            raise error.BadRequest(
                f"BootSourceOverrideEnabled must be one of {', '.join(BOOT_OVERRIDE_ENABLED)}"
            )
        self._update(identity, boot_enabled=enabled)

    def hardware(self, identity: str) -> dict[str, str]:
        """Manufacturer and Model of a system."""
        system = self._get(identity)
        return {"Manufacturer": system.get("manufacturer", ""), "Model": system.get("model", "")}

    # -- BIOS --------------------------------------------------------------------------------

    def get_bios(self, identity: str) -> dict[str, Any]:
        """The BIOS attributes in effect."""
        with self._lock:
            return dict(self._get(identity)["bios"])

    def get_pending_bios(self, identity: str) -> dict[str, Any]:
        """The BIOS attributes staged for the next boot (only those staged)."""
        with self._lock:
            return dict(self._get(identity).get("bios_pending", {}))

    def set_bios(self, identity: str, attributes: dict[str, Any]) -> None:
        """Stage attributes for the next boot; the whole request is refused if one is bad."""
        if not isinstance(attributes, dict) or not attributes:
            raise error.BadRequest("Attributes must be a non-empty object")
        problems = []
        for name, value in attributes.items():
            spec = self._registry.get(name)
            problem = f"unknown attribute {name}" if spec is None else spec.problem(value)
            if problem:
                problems.append(problem)
        if problems:
            raise error.BadRequest("; ".join(problems))
        with self._lock:
            system = self._get(identity)
            self._update(system, bios_pending={**system.get("bios_pending", {}), **attributes})

    def reset_bios(self, identity: str) -> None:
        """Stage every attribute's default for the next boot."""
        defaults = {n: a.default for n, a in self._registry.items() if not a.read_only}
        with self._lock:
            self._update(identity, bios_pending=defaults)

    # -- firmware (see metalform.lab.redfish_firmware) ---------------------------------------

    def _settled(self) -> list[dict[str, Any]]:
        """Every system, its finished update tasks ended (under the lock)."""
        now = time.time()
        out = []
        for uuid in self._order:
            system = self._systems[uuid]
            if fw.settle_tasks(system, now):
                self._update(system)
            out.append(system)
        return out

    def _owner(self, member_id: str) -> tuple[dict[str, Any], str]:
        for system in self._settled():
            prefix = f"{system['name']}-"
            if member_id.startswith(prefix) and member_id[len(prefix) :] in system["firmware"]:
                return system, member_id[len(prefix) :]
        raise error.NotFound(f"no firmware component {member_id}")

    def firmware_inventory(self) -> list[dict[str, Any]]:
        """Every system's firmware components, as SoftwareInventory resources."""
        with self._lock:
            return [fw.inventory_member(s, m) for s in self._settled() for m in s["firmware"]]

    def firmware_member(self, member_id: str) -> dict[str, Any]:
        with self._lock:
            system, member = self._owner(member_id)
            return fw.inventory_member(system, member)

    def simple_update(self, image_uri: str, targets: list[str]) -> dict[str, Any]:
        """Start updating one component from `image_uri`; the Task resource."""
        if not isinstance(image_uri, str) or not image_uri.startswith(("http://", "https://")):
            raise error.BadRequest("ImageURI must be an http(s) URL")
        return self._start_update(
            targets, fw.SIMPLE, lambda member: fw.fetch_image(image_uri, member), image_uri
        )

    def push_update(
        self, request: dict[str, Any], check: Callable[[str], tuple[str | None, str | None]]
    ) -> dict[str, Any]:
        """Start updating one component from an uploaded image (`check` judges it)."""
        return self._start_update(request.get("Targets"), fw.MULTIPART, check, None, request)

    def _start_update(
        self,
        targets: Any,
        kind: str,
        check: Callable[[str], tuple[str | None, str | None]],
        image_uri: str | None,
        request: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if not isinstance(targets, list) or len(targets) != 1 or not isinstance(targets[0], str):
            raise error.BadRequest("Targets must name exactly one FirmwareInventory member")
        with self._lock:
            system, member = self._owner(targets[0].rstrip("/").rsplit("/", 1)[-1])
            if not system["firmware"][member]["updateable"]:
                raise error.BadRequest(f"{member} is not updateable")
            if any(t["state"] == "Running" and t["component"] == member for t in system["tasks"]):
                raise error.Conflict(f"an update of {member} is already running")
        seconds, fail_with = self.firmware_settings.count(kind)
        # The download runs outside the lock: the image server may be this very process.
        version, refusal = check(member)
        with self._lock:
            task = fw.new_task(system, member, image_uri, version, seconds, fail_with, request)
            task["refusal"] = refusal
            system["tasks"].append(task)
            self._update(system)
            return fw.task_document(task, time.time())

    def tasks(self) -> list[dict[str, Any]]:
        with self._lock:
            now = time.time()
            return [fw.task_document(t, now) for s in self._settled() for t in s["tasks"]]

    def task(self, task_id: str) -> dict[str, Any]:
        found = next((t for t in self.tasks() if t["Id"] == task_id), None)
        if found is None:
            raise error.NotFound(f"no task {task_id}")
        return found
