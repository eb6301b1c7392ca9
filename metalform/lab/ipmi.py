"""Real IPMI BMCs on loopback: one OpenIPMI `ipmi_sim` process per simulated BMC.

`ipmi_sim` is an independent implementation of the IPMI 1.5/2.0 LAN protocol (RMCP+, RAKP
authentication, sessions, chassis commands), so the provider is tested against a BMC it did not
write. `ipmi_sim` has no host behind it: power and boot device live in a state file that the
simulator's `chassis_control` program keeps (metalform/lab/ipmi_chassis.py). The files of one
BMC are written by metalform/lab/ipmi_config.py; this module runs and watches the processes.

Layout of a state directory::

    STATE_DIR/peer.json             what `attach` needs: host, user name, BMC names and ports
    STATE_DIR/<bmc>/lan.conf        ipmi_sim configuration (holds the password; mode 0600)
    STATE_DIR/<bmc>/sim.emu         the emulated management controller
    STATE_DIR/<bmc>/chassis         the chassis_control program (a shell script)
    STATE_DIR/<bmc>/chassis.state   power and boot device of the host: survive restarts
    STATE_DIR/<bmc>/ipmi_sim.pid    ipmi_sim.log

Known limits of ipmi_sim (OpenIPMI 2.0.33), which the provider has to live with:
- Get System Boot Options always reports the boot flags as *not valid* and not persistent, and
  Set System Boot Options ignores the valid and persistent bits; only the boot device selector
  round-trips (none, pxe, hdd as "default", cdrom, bios).
- A power cycle (chassis control 2) powers on again after one second.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from metalform.lab import ipmi_chassis
from metalform.lab.ipmi_config import (
    LAN_CONF,
    PASSWORD_PATTERN,
    SIM_EMU,
    SIM_STATE,
    USERNAME_PATTERN,
    BmcSpec,
    LabUser,
    normalise_bmcs,
    write_bmc,
)
from reconciler.errors import MetalformError

# Tests import BmcSpec from here.
__all__ = [
    "BmcSpec",
    "IpmiLabError",
    "IpmiPeer",
    "IpmiSimNotInstalled",
    "LabUser",
    "free_udp_port",
    "ipmi_sim_path",
    "rmcp_ping",
]

IPMI_SIM = "ipmi_sim"
PEER_FILE = "peer.json"
PID_FILE = "ipmi_sim.pid"
LOG_FILE = "ipmi_sim.log"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0
PORT_ATTEMPTS = 5

# RMCP presence ping (ASF, IANA 4542): answered without a session, so it tells that the
# simulator is listening without logging in.
_RMCP_PING = bytes([0x06, 0x00, 0xFF, 0x06, 0x00, 0x00, 0x11, 0xBE, 0x80, 0x4D, 0x00, 0x00])
_RMCP_PONG_TYPE = 0x40


class IpmiLabError(MetalformError):
    """The IPMI lab could not be started, found or stopped."""


class IpmiSimNotInstalled(IpmiLabError):
    template = (
        "ipmi_sim was not found on PATH; the IPMI lab needs it: "
        "install the Debian package with `apt-get install openipmi`"
    )


def ipmi_sim_path() -> str:
    """The ipmi_sim executable, or IpmiSimNotInstalled."""
    found = shutil.which(IPMI_SIM)
    if found is None:
        raise IpmiSimNotInstalled()
    return found


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nobody listens on right now (another process may still take it first)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rmcp_ping(host: str, port: int, timeout: float = 0.05) -> bool:
    """True when an IPMI BMC answers an RMCP presence ping on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(_RMCP_PING, (host, port))
            data = sock.recv(512)
        except OSError:  # timeout, or ICMP port unreachable reported as ECONNREFUSED
            return False
    return len(data) >= 9 and data[3] == 0x06 and data[8] == _RMCP_PONG_TYPE


def _process_alive(pid: int) -> bool:
    """True when pid is a live (not zombie) ipmi_sim process, not a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # `pid (comm) state ...`: comm may hold blanks and parentheses, the state follows the last.
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    state = stat[stat.rfind(")") + 1 :].split()[0]
    return comm == IPMI_SIM and state not in ("Z", "X")


class IpmiPeer:
    """A set of simulated IPMI BMCs on loopback, one `ipmi_sim` process each.

    Start-up of a BMC takes a few milliseconds; `start()` returns once every BMC answers an
    RMCP ping. The processes run in their own sessions and outlive this object until `stop()`,
    so `IpmiPeer.attach(state_dir)` in another process can report on them and stop them.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        bmcs: Mapping[str, int] | Iterable[BmcSpec | str],
        *,
        host: str = "127.0.0.1",
        username: str = "admin",
        password: str | None,
        soft_off_delay: float = 0.5,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).version != 4:
            raise ValueError(f"the IPMI lab binds IPv4 loopback addresses only, not {host}")
        if not USERNAME_PATTERN.match(username):
            raise ValueError("user name: 1 to 16 letters, digits, '.', '_' or '-'")
        if password is not None and not PASSWORD_PATTERN.match(password):
            raise ValueError(
                "password: 1 to 20 printable ASCII characters without blanks, quotes or '\\'"
            )
        if soft_off_delay < 0:
            raise ValueError("soft_off_delay must not be negative")
        self.state_dir = Path(state_dir).resolve()
        self.host = host
        self.username = username
        self._password = password
        self.soft_off_delay = soft_off_delay
        self.bmcs = normalise_bmcs(bmcs)
        self._ports: dict[str, int] = {b.name: b.port for b in self.bmcs}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.startup_seconds: float | None = None
        """Wall time of the last `start()`, from the first spawn to the last BMC answering."""

    # -- state directory -------------------------------------------------------------------

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str]) -> IpmiPeer:
        """The peer described by an existing state directory (started by another process)."""
        path = Path(state_dir)
        try:
            meta = json.loads((path / PEER_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IpmiLabError(f"no IPMI lab in {path} ({PEER_FILE} is missing)") from None
        except (OSError, ValueError) as exc:
            raise IpmiLabError(f"cannot read {path / PEER_FILE}: {exc}") from None
        peer = cls(
            path,
            [BmcSpec(name=b["name"], port=int(b["port"])) for b in meta["bmcs"]],
            host=meta["host"],
            username=meta["username"],
            password=None,
            soft_off_delay=float(meta.get("softOffDelay", 0.5)),
        )
        return peer

    def bmc_dir(self, name: str) -> Path:
        """The directory holding one BMC's configuration, chassis state and logs."""
        self._spec(name)
        return self.state_dir / name

    def _spec(self, name: str) -> BmcSpec:
        for spec in self.bmcs:
            if spec.name == name:
                return spec
        raise KeyError(f"no BMC named {name!r} in this IPMI lab")

    def _write_meta(self) -> None:
        meta = {
            "implementation": IPMI_SIM,
            "host": self.host,
            "username": self.username,
            "softOffDelay": self.soft_off_delay,
            "bmcs": [{"name": b.name, "port": self._ports[b.name]} for b in self.bmcs],
        }
        tmp = self.state_dir / f".{PEER_FILE}.tmp"
        tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        os.replace(tmp, self.state_dir / PEER_FILE)

    def _previous_ports(self) -> dict[str, int]:
        """Ports of the last run, so a restarted lab keeps its addresses when it can."""
        try:
            meta = json.loads((self.state_dir / PEER_FILE).read_text(encoding="utf-8"))
            return {b["name"]: int(b["port"]) for b in meta.get("bmcs", [])}
        except (OSError, ValueError, KeyError, TypeError):
            return {}

    def _pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        if proc is not None:
            return proc.pid if proc.poll() is None else None
        try:
            pid = int((self.state_dir / name / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _process_alive(pid) else None

    def _spawn(self, spec: BmcSpec, port: int, binary: str) -> subprocess.Popen[bytes]:
        directory = self.state_dir / spec.name
        if self._password is None and not (directory / LAN_CONF).exists():
            raise IpmiLabError(
                f"BMC {spec.name}: no {LAN_CONF} in {directory} and no password to write one"
            )
        write_bmc(
            directory,
            spec,
            host=self.host,
            port=port,
            username=self.username,
            password=self._password,
            soft_off_delay=self.soft_off_delay,
        )
        with open(directory / LOG_FILE, "ab") as log:
            proc = subprocess.Popen(
                [binary, "-c", LAN_CONF, "-f", SIM_EMU, "-s", SIM_STATE, "-n", "-p"],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        (directory / PID_FILE).write_text(f"{proc.pid}\n")
        return proc

    def _log_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = (self.state_dir / name / LOG_FILE).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line for line in text.strip().splitlines()[-lines:] if line)

    def start(self, names: Iterable[str] | None = None, timeout: float = START_TIMEOUT) -> None:
        """Start the BMCs (all, or those named) and wait until each answers; idempotent."""
        binary = ipmi_sim_path()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        wanted = [self._spec(n) for n in names] if names is not None else list(self.bmcs)
        previous = self._previous_ports()
        began = time.monotonic()
        pending: dict[str, tuple[BmcSpec, int, int]] = {}  # name -> (spec, port, attempt)
        for spec in wanted:
            if self._pid(spec.name) is not None:
                continue
            port = self._ports.get(spec.name) or previous.get(spec.name, 0)
            if port and spec.port == 0 and not self._port_free(port):
                port = 0
            port = port or free_udp_port(self.host)
            self._ports[spec.name] = port
            self._procs[spec.name] = self._spawn(spec, port, binary)
            pending[spec.name] = (spec, port, 1)
        self._write_meta()
        spawned = list(pending)  # on failure, stop these and leave running ones alone
        deadline = began + timeout
        while pending:
            for name, (spec, port, attempt) in list(pending.items()):
                proc = self._procs[name]
                if proc.poll() is not None:
                    # Another process took an automatically chosen port between our check
                    # and ipmi_sim's bind: try another one.
                    if (
                        spec.port == 0
                        and attempt < PORT_ATTEMPTS
                        and "bind" in self._log_tail(name)
                    ):
                        port = free_udp_port(self.host)
                        self._ports[name] = port
                        self._procs[name] = self._spawn(spec, port, binary)
                        pending[name] = (spec, port, attempt + 1)
                        self._write_meta()
                        continue
                    self.stop(spawned)
                    raise IpmiLabError(
                        f"ipmi_sim for BMC {name} exited with status {proc.returncode}: "
                        f"{self._log_tail(name) or 'no output'}"
                    )
                if rmcp_ping(self.host, port, 0.01):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                self.stop(spawned)
                raise IpmiLabError(
                    f"BMCs {sorted(pending)} did not answer within {timeout:g}s "
                    f"(see {LOG_FILE} in their directories under {self.state_dir})"
                )
        self.startup_seconds = time.monotonic() - began

    def _port_free(self, port: int) -> bool:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((self.host, port))
        except OSError:
            return False
        return True

    def _terminate(self, names: Iterable[str], sig: signal.Signals, timeout: float) -> None:
        """Signal every named BMC first, then wait for each (SIGKILL after `timeout`)."""
        victims: list[tuple[str, int | None, subprocess.Popen[bytes] | None]] = []
        for name in names:
            pid = self._pid(name)
            proc = self._procs.pop(name, None)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            victims.append((name, pid, proc))
        deadline = time.monotonic() + timeout
        for name, pid, proc in victims:
            if pid is not None:
                while time.monotonic() < deadline:
                    gone = proc.poll() is not None if proc is not None else not _process_alive(pid)
                    if gone:
                        break
                    time.sleep(0.005)
                else:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)  # reap it: no zombie, no ResourceWarning
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name / PID_FILE).unlink()

    def stop(self, names: Iterable[str] | None = None) -> None:
        """Stop the BMCs (all, or those named): SIGTERM, then SIGKILL after a few seconds."""
        self._terminate(
            list(names) if names is not None else [b.name for b in self.bmcs],
            signal.SIGTERM,
            STOP_TIMEOUT,
        )

    def kill(self, name: str) -> None:
        """Kill one BMC at once (SIGKILL), as a crash; its chassis state stays on disk."""
        self._spec(name)
        self._terminate([name], signal.SIGKILL, STOP_TIMEOUT)

    def is_running(self, name: str | None = None) -> bool:
        """True when the BMC (or every BMC) has a live ipmi_sim process."""
        names = [name] if name is not None else [b.name for b in self.bmcs]
        return all(self._pid(n) is not None for n in names)

    def pids(self) -> dict[str, int | None]:
        """The ipmi_sim process id of each BMC (None when not running)."""
        return {b.name: self._pid(b.name) for b in self.bmcs}

    # -- what clients see ------------------------------------------------------------------

    @property
    def addresses(self) -> dict[str, str]:
        """`host:port` of each BMC, as a Server's `bmc.address` takes it."""
        return {b.name: f"{self.host}:{p}" for b in self.bmcs if (p := self._ports[b.name])}

    def port(self, name: str) -> int:
        """The UDP port of one BMC (0 before the first start)."""
        self._spec(name)
        return self._ports[name]

    def chassis(self, name: str) -> dict[str, Any]:
        """The simulated host behind a BMC, as IPMI will report it next.

        Keys: `power` (`On`/`Off`), `boot` (none, pxe, default, cdrom, bios), `softOffPending`,
        `resets` and `powerOns` (counters), `lastBootDevice` (boot device at the last power-on
        or reset), `lastRequest` (the last chassis change the BMC asked for: `power-1`,
        `power-0`, `shutdown-1` for a soft-off, `reset-1`, `boot-pxe`, ...).
        """
        state = ipmi_chassis.settle(ipmi_chassis.load(self.bmc_dir(name)))
        return {
            "power": "On" if state["power"] else "Off",
            "boot": state["boot"],
            "softOffPending": bool(state["soft_off_at"]),
            "resets": state["resets"],
            "powerOns": state["power_ons"],
            "lastBootDevice": state["last_boot"],
            "lastRequest": state["last_request"],
        }

    def set_chassis(self, name: str, *, power: str | None = None, boot: str | None = None) -> None:
        """Change the host out of band (someone pressed the power button): drift, for tests.

        Call it while no client is talking to that BMC: the chassis program does not lock.
        """
        directory = self.bmc_dir(name)
        state = ipmi_chassis.settle(ipmi_chassis.load(directory))
        if power is not None:
            if power not in ("On", "Off"):
                raise ValueError("power must be On or Off")
            state["power"] = 1 if power == "On" else 0
            state["soft_off_at"] = 0
        if boot is not None:
            if boot not in ipmi_chassis.BOOT_DEVICES:
                raise ValueError(f"boot must be one of {ipmi_chassis.BOOT_DEVICES}")
            state["boot"] = boot
        ipmi_chassis.save(directory, state)

    def status(self) -> list[dict[str, Any]]:
        """One line of facts per BMC, for `metalform lab status`."""
        rows = []
        for spec in self.bmcs:
            pid = self._pid(spec.name)
            port = self._ports[spec.name]
            chassis = self.chassis(spec.name) if (self.state_dir / spec.name).exists() else {}
            rows.append(
                {
                    "name": spec.name,
                    "address": f"{self.host}:{port}" if port else None,
                    "pid": pid,
                    "answering": bool(pid and port and rmcp_ping(self.host, port)),
                    "power": chassis.get("power"),
                    "boot": chassis.get("boot"),
                }
            )
        return rows

    def __enter__(self) -> IpmiPeer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"IpmiPeer({str(self.state_dir)!r}, {[b.name for b in self.bmcs]})"
