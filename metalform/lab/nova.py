"""A real OpenStack compute API on loopback: nova-api 34.0.0 from PyPI, run as a subprocess.

Nova runs from a virtualenv of its own (`metalform.lab.nova_venv`). `NovaPeer` writes its state
directory (`metalform.lab.nova_server`: `nova.conf` with sqlite databases, `fake://` transport
and header authentication: the paste pipeline has no `authtoken`, so nova trusts `X-User-Id`,
`X-Project-Id` and `X-Roles`), starts the lab's server program with nova's python and waits for
the API to answer. That program syncs the API, cell0 and cell1 databases, creates one compute
service and node per lab host in cell1, maps them, then serves nova's osapi_compute WSGI app
with wsgiref on 127.0.0.1. A stub placement endpoint runs in the same process (nova asks
placement for the resource provider of a host it adds to an aggregate; "none" is an answer nova
accepts), and the same port takes the lab's own control requests: `set_instances` puts
instances on a host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from metalform.lab.nova_server import ENDPOINT_FILE, LAB_FILE, SCRIPT_FILE, write_state
from metalform.lab.nova_venv import ensure_venv, venv_dir
from metalform.lab.process import PeerError, log_tail, running_as, stop_group

PID_FILE = "nova.pid"
LOG_FILE = "nova.log"
PROCESS_MARKER = SCRIPT_FILE.encode()

LAB_USER = "metalform-lab"
LAB_PROJECT = "metalform-lab"
ADMIN_HEADERS = {"X-User-Id": LAB_USER, "X-Project-Id": LAB_PROJECT, "X-Roles": "admin"}
"""What the lab's clients send: nova's keystonecontext trusts them (no authtoken filter)."""


class NovaPeer:
    """nova-api with compute `hosts` in its cell1, on a loopback port.

    All state (config, sqlite databases, pid and port files, log) lives in `state_dir`, so a
    restart or `attach` from another process finds the same aggregates and hosts.
    """

    def __init__(
        self,
        state_dir: Path | str,
        hosts: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        venv: Path | str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        host = "127.0.0.1" if host == "localhost" else host
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the lab binds loopback addresses only, not {host}")
        self.state_dir = Path(state_dir).resolve()
        self.hosts = tuple(hosts)
        self.host = host
        self.port = port
        self.control_port = 0
        self.venv = Path(venv).resolve() if venv else venv_dir()
        self.die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._http = requests.Session()

    @property
    def url(self) -> str:
        """The compute endpoint (what a Provider of type openstack names as `url`)."""
        return f"http://{self.host}:{self.port}/v2.1"

    @classmethod
    def attach(cls, state_dir: Path | str) -> NovaPeer:
        """The peer whose state is in `state_dir` (running or not), e.g. to stop it."""
        state = Path(state_dir).resolve()
        try:
            lab = json.loads((state / LAB_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PeerError(f"no nova lab in {state}") from None
        peer = cls(state, lab["hosts"], host=lab["listen"], port=lab["port"], venv=lab["venv"])
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            endpoint = json.loads((state / ENDPOINT_FILE).read_text(encoding="utf-8"))
            peer.port, peer.control_port = endpoint["port"], endpoint["controlPort"]
        with contextlib.suppress(FileNotFoundError, ValueError):
            peer._pid = int((state / PID_FILE).read_text().strip())
        return peer

    def start(self, timeout: float = 90.0) -> NovaPeer:
        """Build the venv if needed, write the config, start nova-api and wait for it."""
        if self.is_running():
            raise PeerError(f"a nova lab is already running from {self.state_dir}")
        python = ensure_venv(self.venv)
        state = self.state_dir
        state.mkdir(parents=True, exist_ok=True)
        write_state(state, self.venv, self.hosts, self.host, self.port)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if self.die_with_parent:
            env["NOVA_LAB_PARENT"] = str(os.getpid())
        with open(state / LOG_FILE, "ab") as log:
            self._process = subprocess.Popen(
                [str(python), str(state / SCRIPT_FILE), str(state)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=state,
                env=env,
                start_new_session=True,
            )
        self._pid = self._process.pid
        (state / PID_FILE).write_text(f"{self._pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PeerError(
                    f"nova-api exited with {self._process.returncode}:\n"
                    f"{log_tail(state / LOG_FILE, 25)}"
                )
            endpoint = self._read_endpoint()
            if endpoint is not None:
                self.port, self.control_port = endpoint["port"], endpoint["controlPort"]
                with contextlib.suppress(requests.RequestException):
                    if (
                        self._http.get(f"{self.url}/", headers=ADMIN_HEADERS, timeout=5).status_code
                        == 200
                    ):
                        return self
            time.sleep(0.1)
        self.stop()
        raise PeerError(
            f"nova-api did not answer within {timeout:.0f}s:\n{log_tail(state / LOG_FILE, 25)}"
        )

    def _read_endpoint(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state_dir / ENDPOINT_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def is_running(self) -> bool:
        return self._pid is not None and running_as(self._pid, PROCESS_MARKER)

    def stop(self) -> None:
        """Stop nova-api (its whole process group)."""
        stop_group(self._pid, self.is_running, self._process)
        self._process = None
        (self.state_dir / ENDPOINT_FILE).unlink(missing_ok=True)

    def destroy(self) -> None:
        """Stop and delete every trace of the lab."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- the lab's hand on the cloud ---------------------------------------------------------

    def _control(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self._http.post(
            f"http://{self.host}:{self.control_port}/_lab/{path}", json=dict(body), timeout=30
        )
        if response.status_code != 200:
            raise PeerError(f"nova lab {path}: HTTP {response.status_code}: {response.text}")
        data: dict[str, Any] = response.json()
        return data

    def set_instances(self, host: str, count: int) -> int:
        """Make `host` run exactly `count` (active) instances; returns how many it runs now."""
        return int(self._control("instances", {"host": host, "count": count})["count"])

    def instances(self) -> dict[str, int]:
        """Instances per host, as the lab's cell database holds them."""
        return {str(k): int(v) for k, v in self._control("instances", {})["hosts"].items()}

    def reset(self) -> None:
        """Delete every aggregate, instance and added compute host: a clean cloud."""
        self._control("reset", {})

    def add_compute_host(self, host: str) -> None:
        """Register `host` as a compute host, as its nova-compute does when it first starts."""
        self._control("compute-hosts", {"host": host})

    def headers(self) -> dict[str, str]:
        return dict(ADMIN_HEADERS)
