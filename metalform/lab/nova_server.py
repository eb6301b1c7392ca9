"""What runs in nova's virtualenv: its configuration files and the lab's server program.

`write_state` fills a state directory with `nova.conf` (sqlite databases, `fake://` transport,
header authentication), nova's own `api-paste.ini` without the keystone token check, the lab's
`lab.json` and `SERVER_SCRIPT`. That program, run by nova's python, syncs the API, cell0 and
cell1 databases and creates one compute service and node per lab host on its first start, then
serves nova's osapi_compute WSGI app with wsgiref, plus a stub placement endpoint and the lab's
control requests on a second port; it writes both ports to `endpoint.json`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from metalform.lab.process import PeerError

CONFIG_FILE = "nova.conf"
PASTE_FILE = "api-paste.ini"
LAB_FILE = "lab.json"
ENDPOINT_FILE = "endpoint.json"
SCRIPT_FILE = "nova_lab_server.py"


def write_state(state: Path, venv: Path, hosts: Sequence[str], listen: str, port: int) -> None:
    """Write what the server program reads at start into `state`."""
    (state / "locks").mkdir(exist_ok=True)
    (state / ENDPOINT_FILE).unlink(missing_ok=True)
    (state / PASTE_FILE).write_text(_paste_config(venv), encoding="utf-8")
    (state / CONFIG_FILE).write_text(_nova_conf(state), encoding="utf-8")
    (state / SCRIPT_FILE).write_text(SERVER_SCRIPT, encoding="utf-8")
    lab = {"hosts": list(hosts), "listen": listen, "port": port, "venv": str(venv)}
    (state / LAB_FILE).write_text(json.dumps(lab), encoding="utf-8")


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
# No nova-compute runs to send heartbeats: the lab's compute services stay up (a year) unless
# forced down or disabled through the API.
service_down_time = 31536000

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
