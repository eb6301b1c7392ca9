"""A MAAS 2.0 API on loopback: a wire-level simulator of the routes Metalform and libmaas use.

`MaasPeer` runs `python -m metalform.lab.maas --state-dir DIR` in the background (127.0.0.1:5240
for the lab, any free port for tests): a WSGI app served by waitress. Everything lives in the
state directory: `config.json` (machines to seed, transition delay), `api-key` (mode 0600), the
machines in `maas-state.json` (rewritten atomically after every change, so a restarted
simulator keeps its machines), the endpoint and pid files and the log.

The simulator is in three parts:
- `metalform.lab.maas_sim`: the region's machines and tags and their lifecycle in time
  (New -> Commissioning -> Ready -> Deploying -> Deployed -> Releasing -> Ready), with the
  commissioning and deployment faults a test injects;
- `metalform.lab.maas_api`: the HTTP routes (OAuth 1.0 PLAINTEXT as MAAS checks it,
  `describe/`, machines, tags), HTTP faults (a status, or a region that hangs) and the lab-only
  control routes (`/MAAS/_lab/...`, signed like the API);
- this module: the peer (start, attach, stop, the control calls tests make) and the process
  it runs (`serve`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from metalform.lab.maas_api import LAB_PREFIX, App
from metalform.lab.maas_sim import (
    DEFAULT_DELAY,
    DEPLOYED,
    LabMachine,
    Maas,
    new_api_key,
    system_id_of,
)
from metalform.lab.process import ENDPOINT_FILE, ModulePeer, PeerError, secret_file, watch_parent

# What tests and benchmarks import from here, wherever it is defined.
__all__ = [
    "DEFAULT_DELAY",
    "DEPLOYED",
    "LAB_HOSTNAMES",
    "LAB_PORT",
    "LabMachine",
    "MaasPeer",
    "lab_machines",
    "main",
    "new_api_key",
    "serve",
    "sign_headers",
    "system_id_of",
]

LAB_PORT = 5240
CONFIG_FILE = "config.json"
STATE_FILE = "maas-state.json"
KEY_FILE = "api-key"
PID_FILE = "maas.pid"
LOG_FILE = "maas.log"
_MODULE = "metalform.lab.maas"


def sign_headers(api_key: str, url: str, method: str) -> dict[str, str]:
    """OAuth1 PLAINTEXT headers for `url`, as python-libmaas signs its requests."""
    from oauthlib import oauth1

    consumer, token, secret = api_key.split(":")
    client = oauth1.Client(
        consumer, "", token, secret, signature_method=oauth1.SIGNATURE_PLAINTEXT, realm="OAuth"
    )
    _, headers, _ = client.sign(url, method, None, {})
    return dict(headers)


class MaasPeer(ModulePeer):
    """The lab's MAAS: a background process; all its state lives in `state_dir`."""

    module = _MODULE
    noun = "MAAS simulator"
    pid_file = PID_FILE
    log_file = LOG_FILE

    def __init__(
        self,
        state_dir: Path | str,
        machines: Sequence[LabMachine] = (),
        *,
        host: str = "127.0.0.1",
        port: int = LAB_PORT,
        delay: float = DEFAULT_DELAY,
        latency: float = 0.0,
        api_key: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(state_dir, host=host, port=port)
        self.machines = list(machines)
        self.delay = delay
        self.latency = latency
        """Seconds every API request waits before it is served (a region over a WAN)."""
        self._api_key = api_key
        self.die_with_parent = die_with_parent

    @property
    def url(self) -> str:
        """The simulator as a maas Provider's `url`."""
        return f"http://{self.host}:{self.port}/MAAS"

    @property
    def api_key(self) -> str:
        if self._api_key is None:
            self._api_key = (self.state_dir / KEY_FILE).read_text(encoding="utf-8").strip()
        return self._api_key

    @property
    def key_file(self) -> Path:
        """The file holding the API key (for a Credential's `token: {fromFile: ...}`)."""
        return self.state_dir / KEY_FILE

    def _prepare(self) -> None:
        self._api_key = secret_file(self.key_file, self._api_key, new_api_key)
        config = {
            "delay": self.delay,
            "latency": self.latency,
            "machines": [
                {
                    "hostname": m.hostname,
                    "status": m.status,
                    "tags": list(m.tags),
                    "distro_series": m.distro_series,
                    "power_type": m.power_type,
                    "power_address": m.power_address,
                    "power_node": m.power_node,
                }
                for m in self.machines
            ],
            "parentPid": os.getpid() if self.die_with_parent else None,
        }
        (self.state_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")

    def _probe(self) -> None:
        import requests

        requests.get(f"{self.url}/api/2.0/version/", timeout=2).raise_for_status()

    # -- lab control (tests) ------------------------------------------------------------------

    def fail_next(self, hostname: str, stage: str, message: str) -> None:
        """Make the next commissioning or deployment of `hostname` fail with `message`."""
        self._control("POST", "faults", {"hostname": hostname, "stage": stage, "message": message})

    def clear_faults(self) -> None:
        """Forget the machine faults and the HTTP faults not met yet."""
        self._control("DELETE", "faults")
        self._control("DELETE", "http-faults")

    def fail_requests(
        self, *, count: int = 1, path: str = "", status: str | None = None, hang: float = 0.0
    ) -> None:
        """Answer the next `count` API requests under `path` (e.g. `machines/`) with `status`
        (e.g. `503 Service Unavailable`), after holding each for `hang` seconds."""
        self._control(
            "POST", "http-faults", {"count": count, "path": path, "status": status, "hang": hang}
        )

    def requests_seen(self, *, clear: bool = False) -> list[str]:
        """The API requests served, oldest first: `GET machines/`, `POST tags/x/?op=y`, ..."""
        seen: list[str] = self._control("GET", "requests")
        if clear:
            self._control("DELETE", "requests")
        return seen

    def set_status(self, hostname: str, status: str) -> None:
        """Put a machine directly into a MAAS status (New, Ready, Deployed, ...)."""
        self._control("POST", "status", {"hostname": hostname, "status": status})

    def machines_state(self) -> dict[str, dict[str, Any]]:
        """Every machine by hostname, with its stored user data and faults."""
        result: dict[str, dict[str, Any]] = self._control("GET", "machines")
        return result

    def _control(self, method: str, what: str, body: Mapping[str, Any] | None = None) -> Any:
        import requests

        url = f"http://{self.host}:{self.port}{LAB_PREFIX}{what}"
        response = requests.request(
            method, url, json=body, timeout=5, headers=sign_headers(self.api_key, url, method)
        )
        if response.status_code != 200:
            raise PeerError(f"{method} {what}: HTTP {response.status_code} {response.text}")
        return response.json()


def lab_machines(hostnames: Iterable[str], status: str = "Ready") -> list[LabMachine]:
    """Machines for the lab, all in `status`."""
    return [LabMachine(h, status=status) for h in hostnames]


LAB_HOSTNAMES = ("gpu-host-001", "gpu-host-002", "gpu-host-003", "gpu-host-004")
"""The machines `metalform lab up` gives its MAAS: the example's four GPU hosts, Ready."""


def serve(state_dir: Path, host: str, port: int) -> None:
    """Run the simulator in this process until it is terminated."""
    import waitress

    config = json.loads((state_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    api_key = (state_dir / KEY_FILE).read_text(encoding="utf-8").strip()
    maas = Maas(state_dir / STATE_FILE, delay=float(config.get("delay", DEFAULT_DELAY)))
    maas.seed(
        LabMachine(
            m["hostname"],
            status=m["status"],
            tags=tuple(m.get("tags", ())),
            distro_series=m.get("distro_series", ""),
            power_type=m.get("power_type", "ipmi"),
            power_address=m.get("power_address", ""),
            power_node=m.get("power_node", ""),
        )
        for m in config.get("machines", [])
    )
    parent = config.get("parentPid")
    if parent:
        # A test run that dies must not leave simulators behind.
        watch_parent(int(parent))
    app = App(maas, api_key, latency=float(config.get("latency", 0.0)))
    server = waitress.create_server(app, host=host, port=port, threads=16, ident="MAAS-lab")
    bound = int(server.effective_port)
    endpoint = {"host": host, "port": bound, "pid": os.getpid()}
    tmp = state_dir / (ENDPOINT_FILE + ".tmp")
    tmp.write_text(json.dumps(endpoint), encoding="utf-8")
    tmp.rename(state_dir / ENDPOINT_FILE)
    print(f"MAAS simulator on http://{host}:{bound}/MAAS", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m metalform.lab.maas", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=LAB_PORT)
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("the lab binds loopback addresses only")
    serve(args.state_dir.resolve(), args.host, args.port)


if __name__ == "__main__":
    main()
