"""A MAAS 2.0 API on loopback: a wire-level simulator of the routes Metalform and libmaas use.

`MaasPeer` runs `python -m lab.maas --state-dir DIR` in the background (127.0.0.1:5240 for the
lab, any free port for tests): a WSGI app served by waitress. Everything lives in the state
directory: `config.json` (machines to seed, transition delay), `api-key` (mode 0600), the
machines in `maas-state.json` (rewritten atomically after every change, so a restarted
simulator keeps its machines), the endpoint and pid files and the log.

What it models:
- OAuth 1.0 PLAINTEXT signatures, as MAAS checks them: a request signed with another key is
  answered 401; `describe/` (and `version/`) may be read anonymously, as on a real MAAS.
- `describe/` with the handlers python-libmaas binds (Machines, Machine, Tags, Tag, Version).
- the machine lifecycle with time: New -> Commissioning -> Ready -> Deploying -> Deployed ->
  Releasing -> Ready; each transitional state lasts `delay` seconds. A fault injected for a
  machine makes its next commissioning or deployment end in "Failed commissioning" / "Failed
  deployment" with the given status message.
- deploy stores the user data and distro series given; release forgets them.
- HTTP faults: the next N API requests (optionally only those under a path) answered with a
  given status, or held for some seconds before they are served (a region that hangs).
Lab-only control routes (`/MAAS/_lab/...`, signed like the API) inject faults, read the stored
user data and the log of API requests seen (method, path, op); tests use them through
`MaasPeer`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import email.parser
import email.policy
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from metalform.lab.process import ENDPOINT_FILE, ModulePeer, PeerError, secret_file, watch_parent

LAB_PORT = 5240
API_PREFIX = "/MAAS/api/2.0/"
LAB_PREFIX = "/MAAS/_lab/"
DEFAULT_DELAY = 0.5

CONFIG_FILE = "config.json"
STATE_FILE = "maas-state.json"
KEY_FILE = "api-key"
PID_FILE = "maas.pid"
LOG_FILE = "maas.log"
_MODULE = "metalform.lab.maas"

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

    def __post_init__(self) -> None:
        if not _HOSTNAME.match(self.hostname):
            raise ValueError(f"hostname {self.hostname!r} must be lowercase letters, digits, -")
        if self.status not in STATE_BY_NAME:
            raise ValueError(f"status {self.status!r} is not one of {sorted(STATE_BY_NAME)}")


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


# --- the simulated MAAS ------------------------------------------------------------------------


class HttpError(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Maas:
    """The machines and tags of one simulated MAAS region, persisted to a JSON file."""

    def __init__(self, state_file: Path, *, delay: float = DEFAULT_DELAY,
                 clock: Callable[[], float] = time.time) -> None:
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
                }
                for tag in m.tags:
                    self.tags.setdefault(tag, {"name": tag, "comment": "", "definition": ""})
                    self.machines[system_id].setdefault("tag_names", []).append(tag)
            self._save()

    # -- persistence and time -------------------------------------------------------------

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machines": self.machines, "tags": self.tags}, indent=1),
                       encoding="utf-8")
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
                m.update(status=READY, status_message="Released", power_state="off",
                         distro_series="", osystem="", user_data=None)
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
            "power_type": "ipmi",
            "osystem": m["osystem"],
            "distro_series": m["distro_series"],
            "architecture": "amd64/generic",
            "cpu_count": 64,
            "memory": 524288,
            "description": m["description"],
            "tag_names": sorted(m.get("tag_names", [])),
            "owner": "metalform" if m["status"] in (DEPLOYED, DEPLOYING, ALLOCATED,
                                                    FAILED_DEPLOYMENT) else None,
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
            return [self._machine_json(m, base) for m in self.machines.values()
                    if not wanted or m["hostname"] in wanted]

    def read_machine(self, system_id: str, base: str) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return self._machine_json(self._machine(system_id), base)

    def update_machine(self, system_id: str, form: Mapping[str, list[str]],
                       base: str) -> dict[str, Any]:
        with self.lock:
            self._advance()
            m = self._machine(system_id)
            if "description" in form:
                m["description"] = form["description"][-1]
            self._save()
            return self._machine_json(m, base)

    def machine_op(self, system_id: str, op: str, form: Mapping[str, list[str]],
                   base: str) -> dict[str, Any]:
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
                        raise HttpError("400 Bad Request",
                                        "user_data must be base64-encoded text") from None
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

    def power_state(self, system_id: str) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return {"state": self._machine(system_id)["power_state"]}

    def list_tags(self, base: str) -> list[dict[str, Any]]:
        with self.lock:
            return [self._tag_json(t, base) for t in sorted(self.tags.values(),
                                                            key=lambda t: t["name"])]

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
                raise HttpError("400 Bad Request",
                                json.dumps({"name": ["Tag with this Name already exists."]}))
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
            m.update(status=number, status_message=status, until=None,
                     power_state="on" if number == DEPLOYED else "off")
            if number != DEPLOYED:
                m.update(distro_series="", osystem="", user_data=None)
            self._save()

    def dump(self) -> dict[str, Any]:
        with self.lock:
            self._advance()
            return {m["hostname"]: {k: v for k, v in m.items() if k != "until"}
                    for m in self.machines.values()}

    def _by_hostname(self, hostname: str) -> dict[str, Any]:
        for m in self.machines.values():
            if m["hostname"] == hostname:
                return m
        raise HttpError("404 Not Found", f"no machine with hostname {hostname}")


# --- the describe document -----------------------------------------------------------------

def _action(name: str, method: str, op: str | None = None) -> dict[str, Any]:
    return {"name": name, "method": method, "op": op, "restful": op is None, "doc": name}


def describe(base: str) -> dict[str, Any]:
    """The subset of MAAS's API description python-libmaas builds its handlers from."""
    handlers = [
        ("MachinesHandler", "machines/", [], [_action("read", "GET")]),
        ("MachineHandler", "machines/{system_id}/", ["system_id"], [
            _action("read", "GET"), _action("update", "PUT"),
            _action("commission", "POST", "commission"), _action("deploy", "POST", "deploy"),
            _action("release", "POST", "release"), _action("power_on", "POST", "power_on"),
            _action("power_off", "POST", "power_off"),
            _action("query_power_state", "GET", "query_power_state"),
        ]),
        ("TagsHandler", "tags/", [], [_action("read", "GET"), _action("create", "POST")]),
        ("TagHandler", "tags/{name}/", ["name"], [
            _action("read", "GET"), _action("update_nodes", "POST", "update_nodes"),
        ]),
        ("VersionHandler", "version/", [], [_action("read", "GET")]),
    ]
    resources = []
    for name, path, params, actions in handlers:
        handler = {"name": name, "doc": name, "params": params, "actions": actions,
                   "path": API_PREFIX.rstrip("/") + "/" + path, "uri": base + path}
        anon = dict(handler, name="Anon" + name) if name == "VersionHandler" else None
        resources.append({"name": name, "auth": handler, "anon": anon})
    return {"doc": "MAAS API (Metalform lab simulator)", "hash": "lab",
            "resources": resources, "handlers": [r["auth"] for r in resources]}


VERSION = {"capabilities": ["networks-management", "static-ipaddresses", "ipv6-deployment-ubuntu",
                            "devices-management", "storage-deployment-ubuntu",
                            "network-deployment-ubuntu"],
           "version": "2.9.2", "subversion": "lab"}


# --- WSGI --------------------------------------------------------------------------------------

def _parse_authorization(header: str) -> dict[str, str]:
    if not header.startswith("OAuth "):
        return {}
    fields = {}
    for part in header[len("OAuth "):].split(","):
        key, _, value = part.strip().partition("=")
        fields[key] = unquote(value.strip().strip('"'))
    return fields


def _parse_form(environ: Mapping[str, Any]) -> dict[str, list[str]]:
    """The request body: multipart (python-libmaas) or urlencoded (as curl sends it)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    ctype = environ.get("CONTENT_TYPE", "")
    form: dict[str, list[str]] = {}
    if ctype.startswith("multipart/"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes | None):
                form.setdefault(name, []).append((payload or b"").decode("utf-8", "replace"))
    elif body:
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return form


@dataclass
class HttpFault:
    """The next `count` API requests under `path` get `status`, or wait `hang` seconds first."""

    count: int
    path: str = ""
    status: str | None = None
    hang: float = 0.0


class App:
    """The WSGI application: authentication, routing, JSON, the request log, HTTP faults."""

    REQUEST_LOG_SIZE = 1000

    def __init__(self, maas: Maas, api_key: str, *, latency: float = 0.0) -> None:
        self.maas = maas
        self.latency = latency
        consumer, token, secret = api_key.split(":")
        self._consumer, self._token, self._secret = consumer, token, secret
        self._lock = threading.Lock()
        self._requests: collections.deque[str] = collections.deque(maxlen=self.REQUEST_LOG_SIZE)
        self._faults: list[HttpFault] = []

    def _seen(self, method: str, rest: str, query: str) -> HttpFault | None:
        """Log one API request; the HTTP fault it meets, if any."""
        with self._lock:
            self._requests.append(f"{method} {rest}" + (f"?{unquote(query)}" if query else ""))
            for fault in self._faults:
                if rest.startswith(fault.path):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _authorized(self, environ: Mapping[str, Any]) -> bool:
        fields = _parse_authorization(environ.get("HTTP_AUTHORIZATION", ""))
        if fields.get("oauth_signature_method") != "PLAINTEXT":
            return False
        # PLAINTEXT: the signature is consumer secret (empty for MAAS) & token secret.
        expected = "&" + self._secret
        return (hmac.compare_digest(fields.get("oauth_consumer_key", ""), self._consumer)
                and hmac.compare_digest(fields.get("oauth_token", ""), self._token)
                and hmac.compare_digest(fields.get("oauth_signature", ""), expected))

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            status, body = self._dispatch(environ)
            payload = json.dumps(body).encode()
            ctype = "application/json"
        except HttpError as exc:
            status, payload, ctype = exc.status, exc.message.encode(), "text/plain"
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(payload)))])
        return [payload]

    def _dispatch(self, environ: dict[str, Any]) -> tuple[str, Any]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        query = parse_qs(environ.get("QUERY_STRING", ""))
        op = query.get("op", [None])[-1]
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        base = f"http://{host}{API_PREFIX}"
        maas = self.maas
        if path.startswith(API_PREFIX):
            rest = path[len(API_PREFIX):]
            fault = self._seen(method, rest, environ.get("QUERY_STRING", ""))
            time.sleep(self.latency)
            if fault is not None:
                time.sleep(fault.hang)
                if fault.status:
                    raise HttpError(fault.status, "injected by the lab")
            if rest == "describe/" and method == "GET":
                return "200 OK", describe(base)
            if rest == "version/" and method == "GET":
                return "200 OK", VERSION
            if not self._authorized(environ):
                raise HttpError("401 Unauthorized",
                                "Authorization Error: 'Expired timestamp' or invalid token")
            parts = [unquote(p) for p in rest.strip("/").split("/")]
            form = _parse_form(environ) if method in ("POST", "PUT") else query
            if parts == ["machines"] and method == "GET":
                return "200 OK", maas.list_machines(base, query.get("hostname", []))
            if len(parts) == 2 and parts[0] == "machines":
                system_id = parts[1]
                if method == "GET" and op is None:
                    return "200 OK", maas.read_machine(system_id, base)
                if method == "GET" and op == "query_power_state":
                    return "200 OK", maas.power_state(system_id)
                if method == "PUT":
                    return "200 OK", maas.update_machine(system_id, form, base)
                if method == "POST" and op:
                    return "200 OK", maas.machine_op(system_id, op, form, base)
            if parts == ["tags"]:
                if method == "GET":
                    return "200 OK", maas.list_tags(base)
                if method == "POST":
                    return "200 OK", maas.create_tag(form, base)
            if len(parts) == 2 and parts[0] == "tags":
                if method == "GET" and op is None:
                    return "200 OK", maas.read_tag(parts[1], base)
                if method == "POST" and op == "update_nodes":
                    return "200 OK", maas.update_nodes(parts[1], form)
            raise HttpError("404 Not Found", f"no route for {method} {path}")
        if path.startswith(LAB_PREFIX):
            if not self._authorized(environ):
                raise HttpError("401 Unauthorized", "Authorization Error")
            length = int(environ.get("CONTENT_LENGTH") or 0)
            data = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
            what = path[len(LAB_PREFIX):].strip("/")
            if what == "faults" and method == "POST":
                maas.inject(data["hostname"], data["stage"], data.get("message", "failed"))
                return "200 OK", {}
            if what == "faults" and method == "DELETE":
                maas.clear_faults()
                return "200 OK", {}
            if what == "status" and method == "POST":
                maas.set_status(data["hostname"], data["status"])
                return "200 OK", {}
            if what == "machines" and method == "GET":
                return "200 OK", maas.dump()
            if what == "requests" and method == "GET":
                with self._lock:
                    return "200 OK", list(self._requests)
            if what == "requests" and method == "DELETE":
                with self._lock:
                    self._requests.clear()
                return "200 OK", {}
            if what == "http-faults" and method == "POST":
                with self._lock:
                    self._faults.append(HttpFault(count=int(data.get("count", 1)),
                                                  path=str(data.get("path", "")),
                                                  status=data.get("status"),
                                                  hang=float(data.get("hang", 0.0))))
                return "200 OK", {}
            if what == "http-faults" and method == "DELETE":
                with self._lock:
                    self._faults.clear()
                return "200 OK", {}
        raise HttpError("404 Not Found", f"no route for {method} {path}")


# --- the peer (process management) ------------------------------------------------------------

def sign_headers(api_key: str, url: str, method: str) -> dict[str, str]:
    """OAuth1 PLAINTEXT headers for `url`, as python-libmaas signs its requests."""
    from oauthlib import oauth1

    consumer, token, secret = api_key.split(":")
    client = oauth1.Client(consumer, "", token, secret,
                           signature_method=oauth1.SIGNATURE_PLAINTEXT, realm="OAuth")
    _, headers, _ = client.sign(url, method, None, {})
    return dict(headers)


class MaasPeer(ModulePeer):
    """The lab's MAAS: a background process; all its state lives in `state_dir`."""

    module = _MODULE
    noun = "MAAS simulator"
    pid_file = PID_FILE
    log_file = LOG_FILE

    def __init__(self, state_dir: Path | str, machines: Sequence[LabMachine] = (), *,
                 host: str = "127.0.0.1", port: int = LAB_PORT, delay: float = DEFAULT_DELAY,
                 latency: float = 0.0,
                 api_key: str | None = None, die_with_parent: bool = False) -> None:
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
            "machines": [{"hostname": m.hostname, "status": m.status, "tags": list(m.tags),
                          "distro_series": m.distro_series} for m in self.machines],
            "parentPid": os.getpid() if self.die_with_parent else None,
        }
        (self.state_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1), encoding="utf-8")

    def _probe(self) -> None:
        import requests

        requests.get(f"{self.url}/api/2.0/version/", timeout=2).raise_for_status()

    # -- lab control (tests) ------------------------------------------------------------------

    def fail_next(self, hostname: str, stage: str, message: str) -> None:
        """Make the next commissioning or deployment of `hostname` fail with `message`."""
        self._control("POST", "faults", {"hostname": hostname, "stage": stage,
                                         "message": message})

    def clear_faults(self) -> None:
        """Forget the machine faults and the HTTP faults not met yet."""
        self._control("DELETE", "faults")
        self._control("DELETE", "http-faults")

    def fail_requests(self, *, count: int = 1, path: str = "", status: str | None = None,
                      hang: float = 0.0) -> None:
        """Answer the next `count` API requests under `path` (e.g. `machines/`) with `status`
        (e.g. `503 Service Unavailable`), after holding each for `hang` seconds."""
        self._control("POST", "http-faults", {"count": count, "path": path, "status": status,
                                              "hang": hang})

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
        response = requests.request(method, url, json=body, timeout=5,
                                    headers=sign_headers(self.api_key, url, method))
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
    maas.seed(LabMachine(m["hostname"], status=m["status"], tags=tuple(m.get("tags", ())),
                         distro_series=m.get("distro_series", ""))
              for m in config.get("machines", []))
    parent = config.get("parentPid")
    if parent:
        # A test run that dies must not leave simulators behind.
        watch_parent(int(parent))
    app = App(maas, api_key, latency=float(config.get("latency", 0.0)))
    server = waitress.create_server(app, host=host, port=port, threads=16,
                                    ident="MAAS-lab")
    bound = int(server.effective_port)
    endpoint = {"host": host, "port": bound, "pid": os.getpid()}
    tmp = state_dir / (ENDPOINT_FILE + ".tmp")
    tmp.write_text(json.dumps(endpoint), encoding="utf-8")
    tmp.rename(state_dir / ENDPOINT_FILE)
    print(f"MAAS simulator on http://{host}:{bound}/MAAS", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.maas", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=LAB_PORT)
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("the lab binds loopback addresses only")
    serve(args.state_dir.resolve(), args.host, args.port)


if __name__ == "__main__":
    main()
