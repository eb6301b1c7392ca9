"""The MAAS simulator's HTTP face: a WSGI app with MAAS 2.0's routes and the lab's own.

`App` checks OAuth 1.0 PLAINTEXT signatures as MAAS does (`describe/` and `version/` may be
read anonymously), routes the API requests python-libmaas makes to `Maas`, logs them, and
applies the HTTP faults a test injected. The lab's control routes (`/MAAS/_lab/...`, signed
like the API) inject machine and HTTP faults and read the stored state and request log.
"""

from __future__ import annotations

import collections
import email.parser
import email.policy
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from metalform.lab.maas_sim import HttpError, Maas

API_PREFIX = "/MAAS/api/2.0/"
LAB_PREFIX = "/MAAS/_lab/"

# --- the describe document -----------------------------------------------------------------


def _action(name: str, method: str, op: str | None = None) -> dict[str, Any]:
    return {"name": name, "method": method, "op": op, "restful": op is None, "doc": name}


def describe(base: str) -> dict[str, Any]:
    """The subset of MAAS's API description python-libmaas builds its handlers from."""
    handlers = [
        ("MachinesHandler", "machines/", [], [_action("read", "GET")]),
        (
            "MachineHandler",
            "machines/{system_id}/",
            ["system_id"],
            [
                _action("read", "GET"),
                _action("update", "PUT"),
                _action("commission", "POST", "commission"),
                _action("deploy", "POST", "deploy"),
                _action("release", "POST", "release"),
                _action("power_on", "POST", "power_on"),
                _action("power_off", "POST", "power_off"),
                _action("query_power_state", "GET", "query_power_state"),
                _action("power_parameters", "GET", "power_parameters"),
            ],
        ),
        ("TagsHandler", "tags/", [], [_action("read", "GET"), _action("create", "POST")]),
        (
            "TagHandler",
            "tags/{name}/",
            ["name"],
            [
                _action("read", "GET"),
                _action("update_nodes", "POST", "update_nodes"),
            ],
        ),
        ("VersionHandler", "version/", [], [_action("read", "GET")]),
    ]
    resources = []
    for name, path, params, actions in handlers:
        handler = {
            "name": name,
            "doc": name,
            "params": params,
            "actions": actions,
            "path": API_PREFIX.rstrip("/") + "/" + path,
            "uri": base + path,
        }
        anon = dict(handler, name="Anon" + name) if name == "VersionHandler" else None
        resources.append({"name": name, "auth": handler, "anon": anon})
    return {
        "doc": "MAAS API (Metalform lab simulator)",
        "hash": "lab",
        "resources": resources,
        "handlers": [r["auth"] for r in resources],
    }


VERSION = {
    "capabilities": [
        "networks-management",
        "static-ipaddresses",
        "ipv6-deployment-ubuntu",
        "devices-management",
        "storage-deployment-ubuntu",
        "network-deployment-ubuntu",
    ],
    "version": "2.9.2",
    "subversion": "lab",
}


# --- WSGI --------------------------------------------------------------------------------------


def _parse_authorization(header: str) -> dict[str, str]:
    if not header.startswith("OAuth "):
        return {}
    fields = {}
    for part in header[len("OAuth ") :].split(","):
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
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
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
        return (
            hmac.compare_digest(fields.get("oauth_consumer_key", ""), self._consumer)
            and hmac.compare_digest(fields.get("oauth_token", ""), self._token)
            and hmac.compare_digest(fields.get("oauth_signature", ""), expected)
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
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
        if path.startswith(API_PREFIX):
            answer = self._api(environ, method, path[len(API_PREFIX) :])
        elif path.startswith(LAB_PREFIX):
            answer = self._lab(environ, method, path[len(LAB_PREFIX) :].strip("/"))
        else:
            answer = None
        if answer is None:
            raise HttpError("404 Not Found", f"no route for {method} {path}")
        return "200 OK", answer

    # -- the MAAS API ---------------------------------------------------------------------------

    def _api(self, environ: dict[str, Any], method: str, rest: str) -> Any:
        """The answer to one API request (under `API_PREFIX`); None when no route matches."""
        fault = self._seen(method, rest, environ.get("QUERY_STRING", ""))
        time.sleep(self.latency)
        if fault is not None:
            time.sleep(fault.hang)
            if fault.status:
                raise HttpError(fault.status, "injected by the lab")
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        base = f"http://{host}{API_PREFIX}"
        # Read anonymously, as on a real MAAS.
        if rest == "describe/" and method == "GET":
            return describe(base)
        if rest == "version/" and method == "GET":
            return VERSION
        if not self._authorized(environ):
            raise HttpError(
                "401 Unauthorized", "Authorization Error: 'Expired timestamp' or invalid token"
            )
        query = parse_qs(environ.get("QUERY_STRING", ""))
        request = _Request(
            method=method,
            parts=[unquote(p) for p in rest.strip("/").split("/")],
            op=query.get("op", [None])[-1],
            query=query,
            form=_parse_form(environ) if method in ("POST", "PUT") else query,
            base=base,
        )
        if request.parts[0] == "machines":
            return self._machines(request)
        if request.parts[0] == "tags":
            return self._tags(request)
        return None

    def _machines(self, r: _Request) -> Any:
        """`machines/` and `machines/{system_id}/`."""
        maas = self.maas
        if len(r.parts) == 1 and r.method == "GET":
            return maas.list_machines(r.base, r.query.get("hostname", []))
        if len(r.parts) != 2:
            return None
        system_id = r.parts[1]
        if r.method == "GET" and r.op is None:
            return maas.read_machine(system_id, r.base)
        if r.method == "GET" and r.op == "query_power_state":
            return maas.power_state(system_id)
        if r.method == "GET" and r.op == "power_parameters":
            return maas.power_parameters(system_id)
        if r.method == "PUT":
            return maas.update_machine(system_id, r.form, r.base)
        if r.method == "POST" and r.op:
            return maas.machine_op(system_id, r.op, r.form, r.base)
        return None

    def _tags(self, r: _Request) -> Any:
        """`tags/` and `tags/{name}/`."""
        maas = self.maas
        if len(r.parts) == 1 and r.method == "GET":
            return maas.list_tags(r.base)
        if len(r.parts) == 1 and r.method == "POST":
            return maas.create_tag(r.form, r.base)
        if len(r.parts) == 2 and r.method == "GET" and r.op is None:
            return maas.read_tag(r.parts[1], r.base)
        if len(r.parts) == 2 and r.method == "POST" and r.op == "update_nodes":
            return maas.update_nodes(r.parts[1], r.form)
        return None

    # -- the lab's control routes ---------------------------------------------------------------

    def _lab(self, environ: dict[str, Any], method: str, what: str) -> Any:
        """The answer to one control request (under `LAB_PREFIX`); None when none matches."""
        if not self._authorized(environ):
            raise HttpError("401 Unauthorized", "Authorization Error")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        data = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
        if what == "machines" and method == "GET":
            return self.maas.dump()
        if what == "requests" and method == "GET":
            return self._request_log()
        if what == "faults" and method == "POST":
            self.maas.inject(data["hostname"], data["stage"], data.get("message", "failed"))
        elif what == "faults" and method == "DELETE":
            self.maas.clear_faults()
        elif what == "status" and method == "POST":
            self.maas.set_status(data["hostname"], data["status"])
        elif what == "requests" and method == "DELETE":
            self._clear_request_log()
        elif what == "http-faults" and method == "POST":
            self._add_http_fault(data)
        elif what == "http-faults" and method == "DELETE":
            self._clear_http_faults()
        else:
            return None
        return {}

    def _request_log(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def _clear_request_log(self) -> None:
        with self._lock:
            self._requests.clear()

    def _add_http_fault(self, data: Mapping[str, Any]) -> None:
        fault = HttpFault(
            count=int(data.get("count", 1)),
            path=str(data.get("path", "")),
            status=data.get("status"),
            hang=float(data.get("hang", 0.0)),
        )
        with self._lock:
            self._faults.append(fault)

    def _clear_http_faults(self) -> None:
        with self._lock:
            self._faults.clear()


@dataclass(frozen=True)
class _Request:
    """One authorized API request, parsed."""

    method: str
    parts: list[str]
    """The path below `API_PREFIX`, split at `/` and unquoted: `["machines", "abc123"]`."""
    op: str | None
    query: Mapping[str, list[str]]
    form: Mapping[str, list[str]]
    base: str
    """The API's URL as the client reached it, for `resource_uri`s."""
