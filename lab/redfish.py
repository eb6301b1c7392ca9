"""A real Redfish BMC on loopback: sushy-emulator with BIOS settings, run as a subprocess.

`RedfishPeer` starts `python -m lab.redfish_emulator` (sushy-tools' Flask app with the lab's
systems driver, see `lab.redfish_driver`) on 127.0.0.1, keeps everything in its own state
directory (config, htpasswd, emulator state, pid and port files, fault switches) and can be
re-attached from that directory by another process (`metalform lab down`).

Tests use `stage_bios` (an operator staging BIOS values by hand), `set_fault`/`clear_faults`
(a system that answers HTTP 500 or never answers) and `kill` (a BMC that dies mid-apply).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import re
import secrets
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests

from lab.process import ENDPOINT_FILE, ModulePeer, PeerError, spawn_module

BiosValue = str | int | bool

REGISTRY_ID = "LabBiosAttributeRegistry.v1_0_0"
"""The Id of the lab's BIOS attribute registry, named by every system's Bios resource."""

CONFIG_FILE = "emulator.json"
PID_FILE = "emulator.pid"
FAULTS_FILE = "faults.json"
PASSWORD_FILE = "bmc-password"
HTPASSWD_FILE = "htpasswd"
LOG_FILE = "emulator.log"
DATA_DIR = "emulator-state"

ALL_SYSTEMS = "*"
"""Fault target meaning every request to the BMC, the service root included."""

_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_EMULATOR_MODULE = "lab.redfish_emulator"


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


@dataclass(frozen=True)
class BiosAttribute:
    """One entry of the lab's BIOS attribute registry."""

    name: str
    type: str = "Enumeration"
    """Enumeration, Integer, String or Boolean (Redfish AttributeRegistry types)."""
    default: BiosValue = ""
    values: tuple[str, ...] = ()
    """Allowed values of an Enumeration."""
    lower: int | None = None
    upper: int | None = None
    read_only: bool = False
    max_length: int | None = None
    display_name: str = ""

    def problem(self, value: object) -> str | None:
        """Why the BMC refuses `value` for this attribute, or None when it accepts it."""
        if self.read_only:
            return f"attribute {self.name} is read-only"
        if self.type == "Enumeration":
            if value not in self.values:
                return (
                    f"value {value!r} is not allowed for {self.name} (allowed: {list(self.values)})"
                )
        elif self.type == "Integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"attribute {self.name} takes an integer, not {value!r}"
            if self.lower is not None and value < self.lower:
                return f"value {value} of {self.name} is below its lower bound {self.lower}"
            if self.upper is not None and value > self.upper:
                return f"value {value} of {self.name} is above its upper bound {self.upper}"
        elif self.type == "Boolean":
            if not isinstance(value, bool):
                return f"attribute {self.name} takes a boolean, not {value!r}"
        elif self.type == "String":
            if not isinstance(value, str):
                return f"attribute {self.name} takes a string, not {value!r}"
            if self.max_length is not None and len(value) > self.max_length:
                return f"value of {self.name} is longer than {self.max_length} characters"
        return None

    def registry_entry(self) -> dict[str, Any]:
        """The attribute as a Redfish AttributeRegistry `Attributes` entry."""
        entry: dict[str, Any] = {
            "AttributeName": self.name,
            "DisplayName": self.display_name or self.name,
            "Type": self.type,
            "DefaultValue": self.default,
            "ReadOnly": self.read_only,
            "Immutable": self.read_only,
            "Hidden": False,
            "ResetRequired": True,
        }
        if self.type == "Enumeration":
            entry["Value"] = [{"ValueName": v, "ValueDisplayName": v} for v in self.values]
        if self.lower is not None:
            entry["LowerBound"] = self.lower
        if self.upper is not None:
            entry["UpperBound"] = self.upper
        if self.max_length is not None:
            entry["MaxLength"] = self.max_length
        return entry

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, read back by `from_json`."""
        data = asdict(self)
        data["values"] = list(self.values)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BiosAttribute:
        """The inverse of `to_json`."""
        return cls(**{**data, "values": tuple(data.get("values", ()))})


_ON_OFF = ("Enabled", "Disabled")

DEFAULT_BIOS_REGISTRY: tuple[BiosAttribute, ...] = (
    BiosAttribute("ProcTurboMode", values=_ON_OFF, default="Enabled", display_name="Turbo Boost"),
    BiosAttribute("LogicalProc", values=_ON_OFF, default="Enabled", display_name="Hyper-Threading"),
    BiosAttribute("ProcVirtualization", values=_ON_OFF, default="Enabled"),
    BiosAttribute("SriovGlobalEnable", values=_ON_OFF, default="Disabled"),
    BiosAttribute("BootMode", values=("Uefi", "Bios"), default="Uefi"),
    BiosAttribute(
        "WorkloadProfile",
        values=("Balanced", "HighPerformance", "PowerSaving"),
        default="Balanced",
    ),
    BiosAttribute("NumaNodesPerSocket", type="Integer", default=1, lower=1, upper=4),
    BiosAttribute("PowerCapWatts", type="Integer", default=0, lower=0, upper=2000),
    BiosAttribute("ProcCoreCount", type="Integer", default=32, read_only=True),
    BiosAttribute("AssetTag", type="String", default="", max_length=32),
)
"""The registry the lab publishes unless told otherwise."""


@dataclass(frozen=True)
class LabSystem:
    """One emulated server behind the lab BMC."""

    identity: str
    """The Redfish System Id (also its UUID and the `bmc.systemId` of a Server)."""
    name: str = ""
    manufacturer: str = "Metalform Lab"
    model: str = "Virtual Server"
    power_state: str = "Off"
    bios: Mapping[str, BiosValue] = field(default_factory=dict)
    """Initial BIOS values; attributes not given take their registry default."""
    boot_source: str = "Hdd"

    def __post_init__(self) -> None:
        if not _IDENTITY.match(self.identity):
            raise ValueError(f"system identity {self.identity!r} must be letters, digits, ._-")
        if self.power_state not in ("On", "Off"):
            raise ValueError(f"power_state of {self.identity} must be On or Off")

    def emulator_entry(self) -> dict[str, Any]:
        """The system as an entry of sushy-emulator's SUSHY_EMULATOR_FAKE_SYSTEMS."""
        return {
            "uuid": self.identity,
            "name": self.name or self.identity,
            "power_state": self.power_state,
            # True would make the fake driver send each change to a localhost port.
            "external_notifier": False,
            "nics": [],
            "manufacturer": self.manufacturer,
            "model": self.model,
            "bios": dict(self.bios),
            "boot_device": self.boot_source,
        }

    @classmethod
    def from_emulator_entry(cls, entry: Mapping[str, Any]) -> LabSystem:
        """The inverse of `emulator_entry`."""
        return cls(
            identity=entry["uuid"],
            name=entry.get("name", ""),
            manufacturer=entry.get("manufacturer", ""),
            model=entry.get("model", ""),
            power_state=entry.get("power_state", "Off"),
            bios=dict(entry.get("bios", {})),
            boot_source=entry.get("boot_device", "Hdd"),
        )


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0) but runs no more. Its main thread turns Z before the
    # others have exited, so it is only gone once no thread is left.
    with contextlib.suppress(OSError, ValueError):
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ":" in line
        )
        if status.get("State", "").strip().startswith("Z"):
            return int(status.get("Threads", "1").strip()) > 1
    return True


def _is_emulator(pid: int) -> bool:
    """True when `pid` is a lab emulator (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return _pid_alive(pid)
    return _EMULATOR_MODULE.encode() in cmdline


class RedfishPeer(ModulePeer):
    """A sushy-emulator subprocess serving `systems` on a loopback port.

    All state lives in `state_dir`: a restart (or `attach` from another process) finds the
    same systems, power states and BIOS settings again.
    """

    module = _EMULATOR_MODULE
    noun = "Redfish lab"
    pid_file = PID_FILE
    log_file = LOG_FILE
    log_lines = 15

    def __init__(
        self,
        state_dir: Path | str,
        systems: Sequence[LabSystem] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "admin",
        password: str | None = None,
        power_delay: float = 0.2,
        bios_registry: Sequence[BiosAttribute] = DEFAULT_BIOS_REGISTRY,
        die_with_parent: bool = False,
    ) -> None:
        if power_delay < 0:
            raise ValueError("power_delay must not be negative")
        identities = [s.identity for s in systems]
        if len(set(identities)) != len(identities):
            raise ValueError("system identities must be unique")
        super().__init__(state_dir, host="127.0.0.1" if host == "localhost" else host, port=port)
        self.systems = tuple(systems)
        self.username = username
        self._password = password
        self.power_delay = power_delay
        self.bios_registry = tuple(bios_registry)
        self.die_with_parent = die_with_parent
        """Exit when the starting process exits (tests: no orphan BMCs after a crash)."""
        self._http = requests.Session()
        self.faults = FaultBoard(self.state_dir / FAULTS_FILE)

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def attach(cls, state_dir: Path | str) -> RedfishPeer:
        """The peer whose state is in `state_dir` (running or not), e.g. to stop it."""
        state = Path(state_dir).resolve()
        try:
            config = json.loads((state / CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PeerError(f"no Redfish lab in {state}") from None
        lab = config["LAB"]
        peer = cls(
            state,
            [LabSystem.from_emulator_entry(e) for e in config["SUSHY_EMULATOR_FAKE_SYSTEMS"]],
            host=config["SUSHY_EMULATOR_LISTEN_IP"],
            port=lab["requestedPort"],
            username=lab["username"],
            power_delay=lab["powerDelay"],
            bios_registry=[BiosAttribute.from_json(a) for a in lab["biosRegistry"]],
        )
        endpoint = peer._read_endpoint()
        if endpoint is not None:
            peer.port = endpoint["port"]
        peer._adopt_pid()
        return peer

    def _prepare(self) -> None:
        self._write_credentials()
        self._write_config()

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Only our config file configures the emulator, never a stray variable of the caller.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SUSHY_EMULATOR_")}
        return spawn_module(self.module, ["--config", str(self.state_dir / CONFIG_FILE)],
                            self.state_dir / self.log_file, env=env, cwd=self.state_dir)

    def _probe(self) -> None:
        """The service root answers 200."""
        self._http.get(f"{self.url}/redfish/v1/", timeout=1).raise_for_status()

    def _is_peer(self, pid: int) -> bool:
        return _is_emulator(pid) and _pid_alive(pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the emulator (state is kept for the next start)."""
        super().stop(timeout)
        self._http.close()
        (self.state_dir / ENDPOINT_FILE).unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill the emulator at once, as a BMC that dies (its pid file stays behind)."""
        self._terminate(signal.SIGKILL)

    @property
    def url(self) -> str:
        """The BMC's base URL, as a Server's `bmc.address`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def password(self) -> str:
        """The lab BMC's password (generated at the first start unless given)."""
        if self._password is None:
            path = self.state_dir / PASSWORD_FILE
            if path.exists():
                self._password = path.read_text(encoding="utf-8").strip()
            else:
                self._password = secrets.token_urlsafe(18)
        return self._password

    @property
    def password_file(self) -> Path:
        """A file holding only the password (mode 0600), for a Credential's `fromFile`."""
        return self.state_dir / PASSWORD_FILE

    def system_path(self, identity: str) -> str:
        """The Redfish path of a system."""
        return f"/redfish/v1/Systems/{identity}"

    # -- test controls -----------------------------------------------------------------------

    def stage_bios(self, identity: str, attributes: Mapping[str, BiosValue]) -> None:
        """Stage BIOS values by hand, as an operator would: PATCH the Bios Settings object."""
        response = self._request(
            "PATCH",
            f"{self.system_path(identity)}/BIOS/Settings",
            json={"Attributes": dict(attributes)},
        )
        if response.status_code >= 300:
            raise PeerError(f"staging BIOS on {identity} failed: HTTP {response.status_code}")

    def system_document(self, identity: str) -> dict[str, Any]:
        """The raw Redfish System resource, as the BMC serves it."""
        response = self._request("GET", self.system_path(identity))
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def set_fault(self, identity: str, kind: FaultKind | str) -> None:
        """Make the BMC misbehave for one system (or `*` for every request)."""
        kind = FaultKind(kind)
        faults = dict(self.faults.current())
        faults[identity] = kind.value
        self.faults.write(faults)

    def clear_fault(self, identity: str) -> None:
        """One system answers normally again."""
        faults = dict(self.faults.current())
        faults.pop(identity, None)
        self.faults.write(faults)

    def clear_faults(self) -> None:
        """Every system answers normally again (hung requests are released)."""
        self.faults.write({})

    @contextlib.contextmanager
    def fault(self, identity: str, kind: FaultKind | str) -> Iterator[None]:
        """A fault for the duration of a `with` block."""
        self.set_fault(identity, kind)
        try:
            yield
        finally:
            self.clear_fault(identity)

    def stats(self) -> dict[str, int]:
        """Requests seen by the BMC: `requests`, `inFlight` and `maxInFlight`."""
        response = self._http.get(f"{self.url}/lab/v1/stats", timeout=5)
        response.raise_for_status()
        data: dict[str, int] = response.json()
        return data

    def reset_stats(self) -> None:
        """Start counting requests (and the most in flight at once) from zero."""
        self._http.post(f"{self.url}/lab/v1/stats/reset", timeout=5).raise_for_status()

    # -- internals ---------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self._http.request(
            method,
            f"{self.url}{path}",
            auth=(self.username, self.password),
            timeout=10,
            **kwargs,
        )

    def _write_credentials(self) -> None:
        # bcrypt is how sushy-emulator's auth file works; 4 rounds (the minimum) because the
        # emulator checks the hash on every request and this is a throwaway lab password.
        import bcrypt

        password = self.password
        path = self.password_file
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(password + "\n", encoding="utf-8")
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        htpasswd = self.state_dir / HTPASSWD_FILE
        htpasswd.write_text(f"{self.username}:{digest}\n", encoding="utf-8")
        htpasswd.chmod(0o600)

    def _write_config(self) -> None:
        config = {
            "SUSHY_EMULATOR_LISTEN_IP": self.host,
            "SUSHY_EMULATOR_LISTEN_PORT": self.port,
            "SUSHY_EMULATOR_FAKE_DRIVER": True,
            "SUSHY_EMULATOR_FAKE_SYSTEMS": [s.emulator_entry() for s in self.systems],
            "SUSHY_EMULATOR_STATE_DIR": str(self.state_dir / DATA_DIR),
            "SUSHY_EMULATOR_AUTH_FILE": str(self.state_dir / HTPASSWD_FILE),
            "SUSHY_EMULATOR_FEATURE_SET": "full",
            "LAB": {
                "requestedPort": self.port,
                "username": self.username,
                "powerDelay": self.power_delay,
                "biosRegistry": [a.to_json() for a in self.bios_registry],
                "registryId": REGISTRY_ID,
                "faultsFile": str(self.state_dir / FAULTS_FILE),
                "endpointFile": str(self.state_dir / ENDPOINT_FILE),
                "parentPid": os.getpid() if self.die_with_parent else None,
            },
        }
        (self.state_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")

    def _read_endpoint(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(
                (self.state_dir / ENDPOINT_FILE).read_text(encoding="utf-8")
            )
        except (FileNotFoundError, ValueError):
            return None
        return data


def lab_systems(
    count: int,
    *,
    prefix: str = "node",
    models: Iterable[tuple[str, str]] = (
        ("Dell Inc.", "PowerEdge R760"),
        ("Supermicro", "SYS-221H-TNR"),
        ("HPE", "ProLiant DL380 Gen11"),
    ),
    power_state: str = "On",
) -> list[LabSystem]:
    """`count` systems named `<prefix>-001`..., cycling through a few manufacturers/models."""
    choices = list(models)
    width = max(3, len(str(count)))
    return [
        LabSystem(
            identity=f"{prefix}-{i:0{width}d}",
            manufacturer=choices[(i - 1) % len(choices)][0],
            model=choices[(i - 1) % len(choices)][1],
            power_state=power_state,
        )
        for i in range(1, count + 1)
    ]
