"""The simulated MAAS region: its machines and tags, their lifecycle in time, persisted.

`Maas` holds the state that `metalform.lab.maas_api` serves over HTTP: machines move New ->
Commissioning -> Ready -> Deploying -> Deployed -> Releasing -> Ready, each transitional state
lasting `delay` seconds (finished lazily, when the state is next read); an injected fault makes
the next commissioning or deployment of a machine fail. Every change is written atomically to
a JSON file, so a restarted simulator keeps its machines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_DELAY = 0.5

# MAAS's NodeStatus numbers and display names (python-libmaas `maas.client.enum.NodeStatus`).
NEW, COMMISSIONING, FAILED_COMMISSIONING, READY = 0, 1, 2, 4
DEPLOYED, DEPLOYING, ALLOCATED, FAILED_DEPLOYMENT, RELEASING = 6, 9, 10, 11, 12
STATUS_NAMES = {
    NEW: "New",
    COMMISSIONING: "Commissioning",
    FAILED_COMMISSIONING: "Failed commissioning",
    READY: "Ready",
    DEPLOYED: "Deployed",
    DEPLOYING: "Deploying",
    ALLOCATED: "Allocated",
    FAILED_DEPLOYMENT: "Failed deployment",
    RELEASING: "Releasing",
}
STATE_BY_NAME = {name: number for number, name in STATUS_NAMES.items()}

_HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


@dataclass(frozen=True)
class LabMachine:
    """One machine the simulator starts with."""

    hostname: str
    status: str = "Ready"
    """A MAAS status name: New, Ready, Deployed, ..."""
    tags: tuple[str, ...] = ()
    distro_series: str = ""
    power_type: str = "ipmi"
    """`ipmi` or `redfish`: how MAAS reaches the machine's BMC."""
    power_address: str = ""
    """The BMC's address as MAAS stores it (empty: MAAS does not know it)."""
    power_node: str = ""
    """redfish: the BMC's system id (MAAS's `node_id`)."""

    def __post_init__(self) -> None:
        if not _HOSTNAME.match(self.hostname):
            raise ValueError(f"hostname {self.hostname!r} must be lowercase letters, digits, -")
        if self.status not in STATE_BY_NAME:
            raise ValueError(f"status {self.status!r} is not one of {sorted(STATE_BY_NAME)}")


LAB_BMC_PASSWORD = "maas-knows-this-bmc-pa55"
"""The BMC password MAAS's power parameters carry (a secret import must never write)."""


def _power_parameters(machine: LabMachine) -> dict[str, str]:
    """MAAS's power parameters of a machine: its BMC address and login."""
    params = {
        "power_address": machine.power_address,
        "power_user": "maas",
        "power_pass": LAB_BMC_PASSWORD if machine.power_address else "",
    }
    if machine.power_type == "redfish":
        params["node_id"] = machine.power_node
    else:
        params["power_driver"] = "LAN_2_0"
    return params


def system_id_of(hostname: str) -> str:
    """A stable six-character system id, like MAAS's, derived from the hostname."""
    alphabet = "abcdefghjkmnpqrstwxy3456789"
    number = int.from_bytes(hashlib.sha256(hostname.encode()).digest()[:8], "big")
    out = []
    for _ in range(6):
        number, digit = divmod(number, len(alphabet))
        out.append(alphabet[digit])
    return "".join(out)


def new_api_key() -> str:
    """A MAAS-shaped API key `consumer:token:secret`."""
    return ":".join(
        (secrets.token_urlsafe(14)[:18], secrets.token_urlsafe(14)[:18], secrets.token_hex(16))
    )


class HttpError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Maas:
    """The machines and tags of one simulated MAAS region, persisted to a JSON file."""

    def __init__(
        self,
        state_file: Path,
        *,
        delay: float = DEFAULT_DELAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_file = state_file
        self.delay = delay
        self.clock = clock
        self.lock = threading.Lock()
        self.machines: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        if state_file.exists():
            data = json.loads(state_file.read_text(encoding="utf-8"))
            self.machines = data["machines"]
            self.tags = data["tags"]

    def seed(self, machines: Iterable[LabMachine]) -> None:
        """Add machines that are not there yet (a restart keeps the existing ones as they are)."""
        with self.lock:
            for m in machines:
                system_id = system_id_of(m.hostname)
                if system_id in self.machines:
                    continue
                status = STATE_BY_NAME[m.status]
                self.machines[system_id] = {
                    "system_id": system_id,
                    "hostname": m.hostname,
                    "status": status,
                    "status_message": "",
                    "power_state": "on" if status == DEPLOYED else "off",
                    "distro_series": m.distro_series if status == DEPLOYED else "",
                    "osystem": "ubuntu" if status == DEPLOYED else "",
                    "user_data": None,
                    "description": "",
                    "until": None,
                    "faults": {},
                    "power_type": m.power_type,
                    "power_parameters": _power_parameters(m),
                }
                for tag in m.tags:
                    self.tags.setdefault(tag, {"name": tag, "comment": "", "definition": ""})
                    self.machines[system_id].setdefault("tag_names", []).append(tag)
            self._save()

    # -- persistence and time -------------------------------------------------------------

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"machines": self.machines, "tags": self.tags}, indent=1), encoding="utf-8"
        )
        tmp.replace(self.state_file)

    def _advance(self) -> None:
        """Finish every transition whose time has come (called under the lock)."""
        now = self.clock()
        changed = False
        for m in self.machines.values():
            until = m.get("until")
            if until is None or now < until:
                continue
            changed = True
            m["until"] = None
            status = m["status"]
            if status == COMMISSIONING:
                message = m["faults"].pop("commissioning", None)
                m["status"] = FAILED_COMMISSIONING if message else READY
                m["status_message"] = message or "Ready"
                m["power_state"] = "off"
            elif status == DEPLOYING:
                message = m["faults"].pop("deployment", None)
                m["status"] = FAILED_DEPLOYMENT if message else DEPLOYED
                m["status_message"] = message or "Deployed"
                m["power_state"] = "on"
            elif status == RELEASING:
                m.update(
                    status=READY,
                    status_message="Released",
                    power_state="off",
                    distro_series="",
                    osystem="",
                    user_data=None,
                )
        if changed:
            self._save()

    def _start(self, m: dict[str, Any], status: int, message: str) -> None:
        m["status"] = status
        m["status_message"] = message
        m["until"] = self.clock() + self.delay

    # -- views ------------------------------------------------------------------------------

    def _machine_json(self, m: dict[str, Any], base: str) -> dict[str, Any]:
        system_id = m["system_id"]
        return {
            "system_id": system_id,
            "hostname": m["hostname"],
            "fqdn": f"{m['hostname']}.maas",
            "domain": {"id": 0, "name": "maas"},
            "status": m["status"],
            "status_name": STATUS_NAMES[m["status"]],
            "status_message": m["status_message"],
            "status_action": "",
            "power_state": m["power_state"],
            "power_type": m.get("power_type", "ipmi"),
            "osystem": m["osystem"],
            "distro_series": m["distro_series"],
            "architecture": "amd64/generic",
            "cpu_count": 64,
            "memory": 524288,
            "description": m["description"],
            "tag_names": sorted(m.get("tag_names", [])),
            "owner": "metalform"
            if m["status"] in (DEPLOYED, DEPLOYING, ALLOCATED, FAILED_DEPLOYMENT)
            else None,
            "zone": {"id": 1, "name": "default", "description": ""},
            "pool": {"id": 0, "name": "default", "description": ""},
            "resource_uri": f"{base}machines/{system_id}/",
        }

    def _machine(self, system_id: str) -> dict[str, Any]:
        m = self.machines.get(system_id)
        if m is None:
            raise HttpError("404 Not Found", f"No machine matches the given query: {system_id}")
        return m

    # -- API --------------------------------------------------------------------------------

    def list_machines(self, base: str, hostnames: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every machine, or those with one of `hostnames` (MAAS's `?hostname=` filter)."""
        with self.lock:
            self._advance()
            wanted = set(hostnames)
            return [
                self._machine_json(m, base)
                for m in self.machines.values()
                if not wanted or m["hostname"] in wanted
            ]

    def read_machine(self, system_id: str, base: str) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return self._machine_json(self._machine(system_id), base)

    def update_machine(
        self, system_id: str, form: Mapping[str, list[str]], base: str
    ) -> dict[str, Any]:
        with self.lock:
            self._advance()
            m = self._machine(system_id)
            if "description" in form:
                m["description"] = form["description"][-1]
            self._save()
            return self._machine_json(m, base)

    def machine_op(
        self, system_id: str, op: str, form: Mapping[str, list[str]], base: str
    ) -> dict[str, Any]:
        """A `POST machines/{id}/?op=...`: start the transition, answer with the machine."""
        with self.lock:
            self._advance()
            m = self._machine(system_id)
            status = m["status"]
            name = STATUS_NAMES[status]
            if op == "commission":
                if status not in (NEW, READY, FAILED_COMMISSIONING, FAILED_DEPLOYMENT):
                    raise HttpError("409 Conflict", f"Machine cannot be commissioned: {name}")
                self._start(m, COMMISSIONING, "Commissioning")
            elif op == "deploy":
                if status not in (READY, ALLOCATED):
                    raise HttpError("409 Conflict", f"Machine cannot be deployed: {name}")
                raw = form.get("user_data", [""])[-1]
                if raw:
                    try:
                        m["user_data"] = base64.b64decode(raw, validate=False).decode()
                    except (ValueError, UnicodeDecodeError):
                        raise HttpError(
                            "400 Bad Request", "user_data must be base64-encoded text"
                        ) from None
                else:
                    m["user_data"] = None
                m["distro_series"] = form.get("distro_series", ["jammy"])[-1] or "jammy"
                m["osystem"] = "ubuntu"
                self._start(m, DEPLOYING, "Deploying")
            elif op == "release":
                if status not in (DEPLOYED, ALLOCATED, FAILED_DEPLOYMENT, DEPLOYING):
                    raise HttpError("409 Conflict", f"Machine cannot be released: {name}")
                self._start(m, RELEASING, "Releasing")
            elif op in ("power_on", "power_off"):
                m["power_state"] = "on" if op == "power_on" else "off"
            else:
                raise HttpError("400 Bad Request", f"Unrecognised signature: method=POST op={op}")
            self._save()
            return self._machine_json(m, base)

    def power_parameters(self, system_id: str) -> dict[str, Any]:
        """What MAAS logs in to the machine's BMC with (the BMC password included)."""
        with self.lock:
            return dict(self._machine(system_id).get("power_parameters") or {})

    def power_state(self, system_id: str) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return {"state": self._machine(system_id)["power_state"]}

    def list_tags(self, base: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                self._tag_json(t, base) for t in sorted(self.tags.values(), key=lambda t: t["name"])
            ]

    def _tag_json(self, tag: dict[str, Any], base: str) -> dict[str, Any]:
        return {**tag, "kernel_opts": "", "resource_uri": f"{base}tags/{quote(tag['name'])}/"}

    def read_tag(self, name: str, base: str) -> dict[str, Any]:
        with self.lock:
            tag = self.tags.get(name)
            if tag is None:
                raise HttpError("404 Not Found", f"No Tag matches the given query: {name}")
            return self._tag_json(tag, base)

    def create_tag(self, form: Mapping[str, list[str]], base: str) -> dict[str, Any]:
        name = form.get("name", [""])[-1]
        if not _HOSTNAME.match(name.lower()) or len(name) > 256:
            raise HttpError("400 Bad Request", json.dumps({"name": ["Invalid tag name."]}))
        with self.lock:
            if name in self.tags:
                raise HttpError(
                    "400 Bad Request", json.dumps({"name": ["Tag with this Name already exists."]})
                )
            tag = {"name": name, "comment": form.get("comment", [""])[-1], "definition": ""}
            self.tags[name] = tag
            self._save()
            return self._tag_json(tag, base)

    def update_nodes(self, name: str, form: Mapping[str, list[str]]) -> dict[str, int]:
        with self.lock:
            if name not in self.tags:
                raise HttpError("404 Not Found", f"No Tag matches the given query: {name}")
            added = removed = 0
            for system_id in form.get("add", []):
                m = self._machine(system_id)
                names = m.setdefault("tag_names", [])
                if name not in names:
                    names.append(name)
                    added += 1
            for system_id in form.get("remove", []):
                names = self._machine(system_id).setdefault("tag_names", [])
                if name in names:
                    names.remove(name)
                    removed += 1
            self._save()
            return {"added": added, "removed": removed}

    # -- lab control --------------------------------------------------------------------------

    def inject(self, hostname: str, stage: str, message: str) -> None:
        if stage not in ("commissioning", "deployment"):
            raise HttpError("400 Bad Request", "stage must be commissioning or deployment")
        with self.lock:
            m = self._by_hostname(hostname)
            m["faults"][stage] = message
            self._save()

    def clear_faults(self) -> None:
        with self.lock:
            for m in self.machines.values():
                m["faults"] = {}
            self._save()

    def set_status(self, hostname: str, status: str) -> None:
        """Put a machine in a state directly (a test's precondition), ending any transition."""
        if status not in STATE_BY_NAME:
            raise HttpError("400 Bad Request", f"unknown status {status!r}")
        with self.lock:
            m = self._by_hostname(hostname)
            number = STATE_BY_NAME[status]
            m.update(
                status=number,
                status_message=status,
                until=None,
                power_state="on" if number == DEPLOYED else "off",
            )
            if number != DEPLOYED:
                m.update(distro_series="", osystem="", user_data=None)
            self._save()

    def dump(self) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return {
                m["hostname"]: {k: v for k, v in m.items() if k != "until"}
                for m in self.machines.values()
            }

    def _by_hostname(self, hostname: str) -> dict[str, Any]:
        for m in self.machines.values():
            if m["hostname"] == hostname:
                return m
        raise HttpError("404 Not Found", f"no machine with hostname {hostname}")
