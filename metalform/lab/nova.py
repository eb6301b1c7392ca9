"""A real OpenStack compute API on loopback: nova-api 34.0.0 from PyPI, run as a subprocess.

Nova and its ~100 dependencies live in a virtualenv of their own (`ensure_venv`), built once
into a cache folder and reused: they would clash with Metalform's own pins, and nova's imports
(eventlet, oslo) must never run in the test process. Building it twice at once (two pytest
workers) is guarded by a file lock.

`NovaPeer` writes `nova.conf` (sqlite databases, `fake://` transport, header authentication:
the paste pipeline has no `authtoken`, so nova trusts `X-User-Id`, `X-Project-Id` and
`X-Roles`), syncs the API, cell0 and cell1 databases, creates one compute service and node per
lab host in cell1, maps them, then serves nova's osapi_compute WSGI app with wsgiref on
127.0.0.1. A stub placement endpoint runs in the same process (nova asks placement for the
resource provider of a host it adds to an aggregate; "none" is an answer nova accepts), and the
same port takes the lab's own control requests: `set_instances` puts instances on a host.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from metalform.lab.process import PeerError, log_tail, running_as, stop_group

NOVA_VERSION = "34.0.0"
DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "nova-venv"
"""Where the nova virtualenv is built, unless METALFORM_NOVA_VENV names another folder."""

READY_MARK = f".metalform-nova-{NOVA_VERSION}"
CONFIG_FILE = "nova.conf"
PASTE_FILE = "api-paste.ini"
LAB_FILE = "lab.json"
ENDPOINT_FILE = "endpoint.json"
PID_FILE = "nova.pid"
LOG_FILE = "nova.log"
SCRIPT_FILE = "nova_lab_server.py"
PROCESS_MARKER = SCRIPT_FILE.encode()

LAB_USER = "metalform-lab"
LAB_PROJECT = "metalform-lab"
ADMIN_HEADERS = {"X-User-Id": LAB_USER, "X-Project-Id": LAB_PROJECT, "X-Roles": "admin"}
"""What the lab's clients send: nova's keystonecontext trusts them (no authtoken filter)."""


def venv_dir() -> Path:
    override = os.environ.get("METALFORM_NOVA_VENV")
    return Path(override).resolve() if override else DEFAULT_CACHE


def venv_python(venv: Path | None = None) -> Path:
    return (venv or venv_dir()) / "bin" / "python"


def ensure_venv(venv: Path | None = None, timeout: float = 900.0) -> Path:
    """Build nova's virtualenv once (`pip install nova==34.0.0`); return its python.

    A lock file next to it serializes builders: the second worker waits, then finds it ready.
    A build that failed halfway has no ready mark and is started over.
    """
    venv = (venv or venv_dir()).resolve()
    python = venv_python(venv)
    if (venv / READY_MARK).exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / READY_MARK).exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        log = venv.parent / f"{venv.name}-build.log"
        started = time.monotonic()
        with open(log, "wb") as out:
            for command in (
                [sys.executable, "-m", "venv", str(venv)],
                [str(python), "-m", "pip", "install", "--quiet", f"nova=={NOVA_VERSION}"],
            ):
                done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout, check=False)
                if done.returncode != 0:
                    raise PeerError(f"building the nova virtualenv failed:\n{log_tail(log)}")
        (venv / READY_MARK).write_text(f"{time.monotonic() - started:.1f}\n")
    return python


def _paste_config(venv: Path) -> str:
    """nova's own api-paste.ini, without the keystone token check."""
    found = next(venv.glob("etc/nova/api-paste.ini"), None)
    if found is None:
        raise PeerError(f"nova's api-paste.ini is not in {venv}")
    text = found.read_text(encoding="utf-8")
    return text.replace(" authtoken keystonecontext", " keystonecontext")


def _nova_conf(state: Path) -> str:
    # The stub placement port is known once the server binds it: it fills PLACEMENT in.
    return f"""[DEFAULT]
transport_url = fake://
state_path = {state}
host = nova-lab-api
use_stderr = true
debug = false

[api]
auth_strategy = keystone

[database]
connection = sqlite:///{state}/cell1.sqlite

[api_database]
connection = sqlite:///{state}/api.sqlite

[oslo_policy]
enforce_scope = False
enforce_new_defaults = False

[oslo_concurrency]
lock_path = {state}/locks

[placement]
auth_type = none
endpoint_override = http://127.0.0.1:PLACEMENT/placement

[wsgi]
api_paste_config = {state}/{PASTE_FILE}
"""


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
        (state / "locks").mkdir(exist_ok=True)
        (state / ENDPOINT_FILE).unlink(missing_ok=True)
        (state / PASTE_FILE).write_text(_paste_config(self.venv), encoding="utf-8")
        (state / CONFIG_FILE).write_text(_nova_conf(state), encoding="utf-8")
        (state / SCRIPT_FILE).write_text(SERVER_SCRIPT, encoding="utf-8")
        (state / LAB_FILE).write_text(json.dumps({
            "hosts": list(self.hosts), "listen": self.host, "port": self.port,
            "venv": str(self.venv),
        }), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "PYTHON"))}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if self.die_with_parent:
            env["NOVA_LAB_PARENT"] = str(os.getpid())
        with open(state / LOG_FILE, "ab") as log:
            self._process = subprocess.Popen(
                [str(python), str(state / SCRIPT_FILE), str(state)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=state, env=env, start_new_session=True,
            )
        self._pid = self._process.pid
        (state / PID_FILE).write_text(f"{self._pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PeerError(f"nova-api exited with {self._process.returncode}:\n"
                                f"{log_tail(state / LOG_FILE, 25)}")
            endpoint = self._read_endpoint()
            if endpoint is not None:
                self.port, self.control_port = endpoint["port"], endpoint["controlPort"]
                with contextlib.suppress(requests.RequestException):
                    if self._http.get(f"{self.url}/", headers=ADMIN_HEADERS,
                                      timeout=5).status_code == 200:
                        return self
            time.sleep(0.1)
        self.stop()
        raise PeerError(f"nova-api did not answer within {timeout:.0f}s:\n"
                        f"{log_tail(state / LOG_FILE, 25)}")

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
        response = self._http.post(f"http://{self.host}:{self.control_port}/_lab/{path}",
                                   json=dict(body), timeout=30)
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


SERVER_SCRIPT = r'''
"""nova-api for Metalform's lab: set up the databases once, then serve (runs in nova's venv)."""
import json
import os
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

STATE = os.path.abspath(sys.argv[1])
LAB = json.load(open(os.path.join(STATE, "lab.json")))
CONF_FILE = os.path.join(STATE, "nova.conf")
SETUP_MARK = os.path.join(STATE, "setup.done")
CELL1_UUID_FILE = os.path.join(STATE, "cell1.uuid")
FLAVOR = {"flavorid": "lab", "name": "lab", "memory_mb": 1024, "vcpus": 1, "root_gb": 1,
          "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": 0,
          "disabled": False, "is_public": True, "extra_specs": {}, "description": None}


def watch_parent():
    parent = os.environ.get("NOVA_LAB_PARENT")
    if not parent:
        return
    import time

    def loop():
        while True:
            try:
                os.kill(int(parent), 0)
            except OSError:
                os._exit(0)
            time.sleep(1)

    threading.Thread(target=loop, daemon=True).start()


class Quiet(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("api %s\n" % (fmt % args))


class Control(BaseHTTPRequestHandler):
    """Stub placement (no resource providers) and the lab's control requests."""

    def log_message(self, fmt, *args):
        sys.stderr.write("lab %s\n" % (fmt % args))

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/placement/resource_providers"):
            self._send(200, {"resource_providers": []})
        elif self.path.rstrip("/") == "/placement":
            # Placement's own version document; keystoneauth needs the self link.
            self._send(200, {"versions": [{
                "id": "v1.0", "status": "CURRENT", "max_version": "1.39", "min_version": "1.0",
                "links": [{"rel": "self", "href": ""}]}]})
        else:
            self._send(404, {"errors": [{"status": 404, "title": "Not Found"}]})

    def do_PUT(self):
        self._send(404, {"errors": [{"status": 404, "title": "Not Found"}]})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        try:
            with LOCK:
                if self.path == "/_lab/instances":
                    self._send(200, instances(body))
                elif self.path == "/_lab/reset":
                    self._send(200, reset())
                elif self.path == "/_lab/compute-hosts":
                    self._send(200, compute_hosts(body))
                else:
                    self._send(404, {"error": "no such lab request"})
        except Exception as exc:
            self._send(500, {"error": repr(exc)})


LOCK = threading.Lock()


def cell1(ctxt):
    from nova import objects
    return objects.CellMapping.get_by_uuid(ctxt, open(CELL1_UUID_FILE).read().strip())


def instances(body):
    from nova import context, objects
    from nova.network import model as network_model
    ctxt = context.get_admin_context()
    with context.target_cell(ctxt, cell1(ctxt)) as cctxt:
        every = objects.InstanceList.get_by_filters(cctxt, {"deleted": False})
        if "host" not in body:
            hosts = {}
            for inst in every:
                hosts[inst.host] = hosts.get(inst.host, 0) + 1
            return {"hosts": hosts}
        host, want = body["host"], int(body["count"])
        mine = [i for i in every if i.host == host]
        node = objects.ComputeNode.get_by_host_and_nodename(cctxt, host, host) if want else None
        for inst in mine[want:]:
            inst.destroy()
        for n in range(len(mine), want):
            inst_uuid = str(uuid.uuid4())
            inst = objects.Instance(
                cctxt, uuid=inst_uuid, project_id="metalform-lab", user_id="metalform-lab",
                host=host, node=host, compute_id=node.id, vm_state="active", power_state=1,
                task_state=None,
                display_name="%s-vm-%d" % (host, n), hostname="%s-vm-%d" % (host, n),
                availability_zone=None, launched_on=host, memory_mb=1024, vcpus=1,
                root_gb=1, ephemeral_gb=0, flavor=objects.Flavor(**FLAVOR),
                old_flavor=None, new_flavor=None, metadata={}, system_metadata={},
                instance_type_id=None,
                info_cache=objects.InstanceInfoCache(network_info=network_model.NetworkInfo()),
                security_groups=objects.SecurityGroupList(objects=[]))
            inst.create()
            objects.InstanceMapping(ctxt, instance_uuid=inst_uuid, project_id="metalform-lab",
                                    cell_mapping=cell1(ctxt), queued_for_delete=False).create()
        count = len(objects.InstanceList.get_by_host(cctxt, host))
    return {"host": host, "count": count}


def create_compute(cctxt, host):
    """A nova-compute service and its compute node, as nova-compute registers them."""
    from nova import objects
    service = objects.Service(cctxt, host=host, binary="nova-compute", topic="compute",
                              report_count=0)
    service.create()
    objects.ComputeNode(
        cctxt, host=host, hypervisor_hostname=host, service_id=service.id,
        vcpus=64, memory_mb=262144, local_gb=2048, vcpus_used=0, memory_mb_used=0,
        local_gb_used=0, hypervisor_type="fake", hypervisor_version=1000,
        cpu_info="{}", disk_available_least=2048, free_ram_mb=262144,
        free_disk_gb=2048, current_workload=0, running_vms=0,
        host_ip="127.0.0.1", supported_hv_specs=[], stats={},
        cpu_allocation_ratio=16.0, ram_allocation_ratio=1.5,
        disk_allocation_ratio=1.0).create()


def compute_hosts(body):
    """Register compute host `body["host"]` (a deployed machine whose nova-compute started)."""
    from nova import context
    from nova.objects import host_mapping
    ctxt = context.get_admin_context()
    cell = cell1(ctxt)
    with context.target_cell(ctxt, cell) as cctxt:
        create_compute(cctxt, body["host"])
    host_mapping.discover_hosts(ctxt, cell_uuid=cell.uuid)
    return {"host": body["host"]}


def reset():
    """No aggregates, no instances, and the lab's compute hosts only."""
    from nova import context, exception, objects
    ctxt = context.get_admin_context()
    for agg in objects.AggregateList.get_all(ctxt):
        for host in list(agg.hosts or []):
            agg.delete_host(host)
        agg.destroy()
    with context.target_cell(ctxt, cell1(ctxt)) as cctxt:
        for inst in objects.InstanceList.get_by_filters(cctxt, {"deleted": False}):
            inst.destroy()
        for service in objects.ServiceList.get_all(cctxt):
            if service.binary == "nova-compute" and service.host not in LAB["hosts"]:
                for node in objects.ComputeNodeList.get_all_by_host(cctxt, service.host):
                    node.destroy()
                service.destroy()
                try:
                    objects.HostMapping.get_by_host(ctxt, service.host).destroy()
                except exception.HostMappingNotFound:
                    pass
    return {}


def setup():
    """Databases, cells and compute hosts: what `nova-manage` and nova-compute would make."""
    from oslo_utils import uuidutils

    from nova import config, context, objects
    from nova.db import migration
    from nova.objects import host_mapping

    config.parse_args(["nova-lab-setup"], default_config_files=[CONF_FILE])
    objects.register_all()
    migration.db_sync(database="api")
    ctxt = context.get_admin_context()
    cell0 = objects.CellMapping(
        ctxt, uuid=objects.CellMapping.CELL0_UUID, name="cell0", transport_url="none:///",
        database_connection="sqlite:///%s/cell0.sqlite" % STATE)
    cell0.create()
    cell = objects.CellMapping(
        ctxt, uuid=uuidutils.generate_uuid(), name="cell1", transport_url="fake://",
        database_connection="sqlite:///%s/cell1.sqlite" % STATE)
    cell.create()
    migration.db_sync(database="main")
    with context.target_cell(ctxt, cell0) as cctxt:
        migration.db_sync(database="main", context=cctxt)
    with context.target_cell(ctxt, cell) as cctxt:
        for host in LAB["hosts"]:
            create_compute(cctxt, host)
    host_mapping.discover_hosts(ctxt, cell_uuid=cell.uuid)
    with open(CELL1_UUID_FILE, "w") as out:
        out.write(cell.uuid)
    open(SETUP_MARK, "w").close()


def main():
    watch_parent()
    if not os.path.exists(SETUP_MARK):
        # Setup parses the config once; the WSGI app parses it again in a fresh process.
        import subprocess
        done = subprocess.run([sys.executable, __file__, STATE, "--setup"])
        if done.returncode != 0:
            sys.exit("nova lab setup failed")
    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    conf = open(CONF_FILE).read().replace("127.0.0.1:PLACEMENT", "127.0.0.1:%d"
                                          % control.server_address[1])
    with open(CONF_FILE, "w") as out:
        out.write(conf)
    os.environ["OS_NOVA_CONFIG_DIR"] = STATE
    os.environ["OS_NOVA_CONFIG_FILES"] = "api-paste.ini;nova.conf"
    sys.argv = [sys.argv[0]]
    from nova.wsgi import osapi_compute

    server = make_server(LAB["listen"], LAB["port"], osapi_compute.application,
                         server_class=WSGIServer, handler_class=Quiet)
    endpoint = {"port": server.server_address[1], "controlPort": control.server_address[1]}
    tmp = os.path.join(STATE, "endpoint.json.tmp")
    with open(tmp, "w") as out:
        json.dump(endpoint, out)
    os.replace(tmp, os.path.join(STATE, "endpoint.json"))
    server.serve_forever()


if __name__ == "__main__":
    if "--setup" in sys.argv:
        sys.argv.remove("--setup")
        setup()
    else:
        main()
'''
