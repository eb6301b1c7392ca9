"""A real Redfish BMC on loopback: sushy-emulator with BIOS settings, run as a subprocess.

`RedfishPeer` starts `python -m metalform.lab.redfish_emulator` (sushy-tools' Flask app with
the lab's systems driver, see `metalform.lab.redfish_driver`) on 127.0.0.1, keeps everything in
its own state directory (config, htpasswd, emulator state, pid and port files, fault switches)
and can be re-attached from that directory by another process (`metalform lab down`). What it
serves is described in `metalform.lab.redfish_systems`; its fault switches are in
`metalform.lab.redfish_faults`.

Tests use `stage_bios` (an operator staging BIOS values by hand), `set_fault`/`clear_faults`
(a system that answers HTTP 500 or never answers) and `kill` (a BMC that dies mid-apply).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from metalform.lab.process import ENDPOINT_FILE, ModulePeer, PeerError, spawn_module
from metalform.lab.redfish_faults import FaultBoard, FaultKind
from metalform.lab.redfish_systems import (
    DEFAULT_BIOS_REGISTRY,
    REGISTRY_ID,
    BiosAttribute,
    BiosValue,
    LabSystem,
)

# The emulator, its driver, tests and benchmarks import these from here.
__all__ = [
    "DEFAULT_BIOS_REGISTRY",
    "REGISTRY_ID",
    "BiosAttribute",
    "BiosValue",
    "FaultBoard",
    "FaultKind",
    "LabSystem",
    "PeerError",
    "RedfishPeer",
]

CONFIG_FILE = "emulator.json"
PID_FILE = "emulator.pid"
FAULTS_FILE = "faults.json"
PASSWORD_FILE = "bmc-password"
HTPASSWD_FILE = "htpasswd"
LOG_FILE = "emulator.log"
DATA_DIR = "emulator-state"
_EMULATOR_MODULE = "metalform.lab.redfish_emulator"


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
        return spawn_module(
            self.module,
            ["--config", str(self.state_dir / CONFIG_FILE)],
            self.state_dir / self.log_file,
            env=env,
            cwd=self.state_dir,
        )

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
