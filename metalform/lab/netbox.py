"""A NetBox REST API on loopback: a wire-level simulator of the routes pynetbox uses.

NetBox needs PostgreSQL and Redis and ships no test server, so `NetboxPeer` runs
`python -m lab.netbox --state-dir DIR`: a WSGI app served by waitress on 127.0.0.1. Everything
lives in the state directory: `config.json` (page sizes), `token` (mode 0600), the devices in
`devices.json` (re-read on every request, so a test changes NetBox by rewriting it through
`set_devices`), `faults.json`, the endpoint and pid files and the log.

Routes, with NetBox's JSON shapes:
- `GET /api/` (the API root; `API-Version` header, read by pynetbox's `version`)
- `GET /api/status/`
- `GET /api/dcim/devices/?tag=&site=&role=&status=&name=&q=&id=&limit=&offset=`: NetBox's
  offset pagination `{count, next, previous, results}`; `limit` defaults to `page_size`, is
  capped at `max_page_size` (NetBox's PAGINATE_COUNT and MAX_PAGE_SIZE), `limit=0` means the
  maximum. Several `tag` values must all match (NetBox's tag filter is conjoined); several
  values of the other filters are alternatives. Unknown filters are ignored.
- `GET /api/dcim/devices/{id}/`
Authentication: `Authorization: Token <token>` (or `Bearer <token>`, NetBox 4.5 v2 tokens) on
everything but the API root; anything else is answered 401 `{"detail": ...}`.
Faults (`set_fault`): `error` answers 500 to every API request, `hang` never answers.
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from metalform.lab.process import ENDPOINT_FILE, ModulePeer, secret_file, watch_parent

LAB_PORT = 8001
API_PREFIX = "/api/"
NETBOX_VERSION = "4.2.9"
API_VERSION = "4.2"
DEFAULT_PAGE_SIZE = 50
DEFAULT_MAX_PAGE_SIZE = 1000

CONFIG_FILE = "config.json"
DEVICES_FILE = "devices.json"
TOKEN_FILE = "token"
FAULTS_FILE = "faults.json"
PID_FILE = "netbox.pid"
LOG_FILE = "netbox.log"
_MODULE = "metalform.lab.netbox"
HANG_LIMIT = 60.0
"""A hanging request gives up after this long, so a forgotten fault cannot wedge a worker."""

MULTI_FILTERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    # query parameter -> how a device's value is read (alternatives: any value may match)
    "site": lambda d: (d.get("site") or {}).get("slug"),
    "role": lambda d: (d.get("role") or {}).get("slug"),
    "status": lambda d: (d.get("status") or {}).get("value"),
    "name": lambda d: d.get("name"),
    "id": lambda d: str(d.get("id")),
}
MULTI_FILTERS["device_role"] = MULTI_FILTERS["role"]  # the pre-4.0 spelling


def _slugify(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def lab_device(
    ident: int,
    name: str | None,
    *,
    site: str = "yul1",
    role: str = "compute",
    tags: Sequence[str] = ("metalform",),
    bmc_address: str | None = None,
    bmc_driver: str | None = "redfish",
    bmc_system_id: str | None = None,
    status: str = "active",
) -> dict[str, Any]:
    """One device as NetBox stores it (`url`s are added when served, they name the host)."""
    nested_role = {"id": 1, "name": role.title(), "slug": role}
    return {
        "id": ident,
        "name": name,
        "display": name or f"Device {ident}",
        "device_type": {
            "id": 1,
            "model": "Virtual Server",
            "slug": "virtual-server",
            "manufacturer": {"id": 1, "name": "Metalform Lab", "slug": "metalform-lab"},
        },
        "role": nested_role,
        # NetBox < 4.0 called it device_role; older pynetbox-based tools still read it.
        "device_role": nested_role,
        "site": {"id": 1, "name": site.upper(), "slug": site},
        "status": {"value": status, "label": status.title()},
        "tags": [
            {"id": i + 1, "name": t, "slug": _slugify(t), "color": "9e9e9e"}
            for i, t in enumerate(tags)
        ],
        "custom_fields": {
            "bmc_address": bmc_address,
            "bmc_driver": bmc_driver,
            "bmc_system_id": bmc_system_id,
        },
        "primary_ip": None,
        "serial": "",
        "created": "2026-01-01T00:00:00Z",
        "last_updated": "2026-01-01T00:00:00Z",
    }


class HttpError(Exception):
    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: the server re-reads these files while tests rewrite them."""
    tmp = path.with_name(path.name + f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


class App:
    """The WSGI application: token check, routing, filtering, pagination."""

    def __init__(self, state_dir: Path, token: str, page_size: int, max_page_size: int) -> None:
        self.state_dir = state_dir
        self._token = token
        self.page_size = page_size
        self.max_page_size = max_page_size

    def _devices(self) -> list[dict[str, Any]]:
        try:
            devices: list[dict[str, Any]] = json.loads(
                (self.state_dir / DEVICES_FILE).read_text(encoding="utf-8")
            )
        except FileNotFoundError:
            return []
        # NetBox orders devices by (natural) name, then id; name order is enough here.
        return sorted(devices, key=lambda d: (d.get("name") or "", d.get("id") or 0))

    def _fault(self) -> str | None:
        try:
            fault: str | None = json.loads(
                (self.state_dir / FAULTS_FILE).read_text(encoding="utf-8")
            ).get("mode")
        except (FileNotFoundError, ValueError):
            return None
        return fault

    def _authorized(self, environ: Mapping[str, Any]) -> bool:
        scheme, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme not in ("Token", "Bearer") or not value:
            return False
        return hmac.compare_digest(value.strip().encode(), self._token.encode())

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        headers = [("Content-Type", "application/json"), ("API-Version", API_VERSION)]
        try:
            status, body = self._dispatch(environ)
        except HttpError as exc:
            status, body = exc.status, {"detail": exc.detail}
        payload = json.dumps(body).encode()
        start_response(status, [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _dispatch(self, environ: dict[str, Any]) -> tuple[str, Any]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        if not path.startswith(API_PREFIX) and path != "/api":
            raise HttpError("404 Not Found", "Not found.")
        fault = self._fault()
        if fault == "hang":
            deadline = time.monotonic() + HANG_LIMIT
            while self._fault() == "hang" and time.monotonic() < deadline:
                time.sleep(0.05)
        elif fault == "error":
            raise HttpError("500 Internal Server Error", "Server Error (lab fault)")
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        base = f"http://{host}{API_PREFIX}"
        rest = path[len(API_PREFIX) :].strip("/") if path != "/api" else ""
        if method != "GET":
            raise HttpError("405 Method Not Allowed", f'Method "{method}" not allowed.')
        if rest == "":
            # The API root is readable without a token, as on NetBox.
            return "200 OK", {
                "circuits": f"{base}circuits/",
                "dcim": f"{base}dcim/",
                "extras": f"{base}extras/",
                "ipam": f"{base}ipam/",
                "status": f"{base}status/",
            }
        if not self._authorized(environ):
            raise HttpError("401 Unauthorized", "Invalid token")
        if rest == "status":
            return "200 OK", {
                "django-version": "5.1.4",
                "installed-apps": {},
                "netbox-version": NETBOX_VERSION,
                "plugins": {},
                "python-version": "3.12.3",
                "rq-workers-running": 1,
            }
        if rest == "dcim/devices":
            return "200 OK", self._list(environ, base)
        parts = rest.split("/")
        if len(parts) == 3 and parts[:2] == ["dcim", "devices"]:
            for device in self._devices():
                if str(device.get("id")) == parts[2]:
                    return "200 OK", self._served(device, base)
        raise HttpError("404 Not Found", "Not found.")

    def _served(self, device: Mapping[str, Any], base: str) -> dict[str, Any]:
        return {**device, "url": f"{base}dcim/devices/{device.get('id')}/"}

    def _list(self, environ: Mapping[str, Any], base: str) -> dict[str, Any]:
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        devices = self._devices()
        for tag in query.get("tag", []):
            devices = [d for d in devices if tag in {t.get("slug") for t in d.get("tags") or []}]
        for param, read in MULTI_FILTERS.items():
            if param in query:
                wanted = set(query[param])
                devices = [d for d in devices if read(d) in wanted]
        if "q" in query:
            needle = query["q"][-1].lower()
            devices = [d for d in devices if needle in (d.get("name") or "").lower()]
        try:
            limit = int(query.get("limit", [self.page_size])[-1])
            offset = int(query.get("offset", ["0"])[-1])
        except ValueError:
            raise HttpError("400 Bad Request", "limit and offset must be integers") from None
        if limit <= 0 or limit > self.max_page_size:
            limit = self.max_page_size
        offset = max(offset, 0)
        count = len(devices)
        page = devices[offset : offset + limit]

        def link(at: int) -> str:
            params = {k: v for k, v in query.items() if k not in ("limit", "offset")}
            params["limit"] = [str(limit)]
            if at:
                params["offset"] = [str(at)]
            return f"{base}dcim/devices/?{urlencode(params, doseq=True)}"

        return {
            "count": count,
            "next": link(offset + limit) if offset + limit < count else None,
            "previous": link(max(offset - limit, 0)) if offset > 0 else None,
            "results": [self._served(d, base) for d in page],
        }


# --- the peer (process management) ------------------------------------------------------------


class NetboxPeer(ModulePeer):
    """The lab's NetBox: a background process; all its state lives in `state_dir`."""

    module = _MODULE
    noun = "NetBox simulator"
    pid_file = PID_FILE
    log_file = LOG_FILE

    def __init__(
        self,
        state_dir: Path | str,
        devices: Sequence[Mapping[str, Any]] = (),
        *,
        host: str = "127.0.0.1",
        port: int = LAB_PORT,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_page_size: int = DEFAULT_MAX_PAGE_SIZE,
        token: str | None = None,
        die_with_parent: bool = False,
    ) -> None:
        super().__init__(state_dir, host=host, port=port)
        self.devices = [dict(d) for d in devices]
        self.page_size = page_size
        self.max_page_size = max_page_size
        self._token = token
        self.die_with_parent = die_with_parent

    @property
    def url(self) -> str:
        """The simulator as a netbox Provider's `url`."""
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = (self.state_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
        return self._token

    @property
    def token_file(self) -> Path:
        """The file holding the API token (for a Credential's `token: {fromFile: ...}`)."""
        return self.state_dir / TOKEN_FILE

    def _prepare(self) -> None:
        (self.state_dir / FAULTS_FILE).unlink(missing_ok=True)
        # NetBox v1 tokens: 40 hex characters.
        self._token = secret_file(self.token_file, self._token, lambda: secrets.token_hex(20))
        if self.devices or not (self.state_dir / DEVICES_FILE).exists():
            self.set_devices(self.devices)
        config = {
            "pageSize": self.page_size,
            "maxPageSize": self.max_page_size,
            "parentPid": os.getpid() if self.die_with_parent else None,
        }
        _write_json(self.state_dir / CONFIG_FILE, config)

    def _probe(self) -> None:
        import requests

        requests.get(
            f"{self.url}/api/status/", timeout=2, headers={"Authorization": f"Token {self.token}"}
        ).raise_for_status()

    # -- lab control (tests) ------------------------------------------------------------------

    def set_devices(self, devices: Sequence[Mapping[str, Any]]) -> None:
        """Replace NetBox's devices; the next request sees them."""
        self.devices = [dict(d) for d in devices]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.state_dir / DEVICES_FILE, self.devices)

    def set_fault(self, mode: str | None) -> None:
        """`error` (HTTP 500 to everything), `hang` (no answer) or None (healthy again)."""
        if mode is None:
            (self.state_dir / FAULTS_FILE).unlink(missing_ok=True)
            return
        if mode not in ("error", "hang"):
            raise ValueError(f"unknown fault {mode!r} (error or hang)")
        _write_json(self.state_dir / FAULTS_FILE, {"mode": mode})


def serve(state_dir: Path, host: str, port: int) -> None:
    """Run the simulator in this process until it is terminated."""
    import waitress

    config = json.loads((state_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    token = (state_dir / TOKEN_FILE).read_text(encoding="utf-8").strip()
    parent = config.get("parentPid")
    if parent:
        # A test run that dies must not leave simulators behind.
        watch_parent(int(parent))
    app = App(
        state_dir,
        token,
        int(config.get("pageSize", DEFAULT_PAGE_SIZE)),
        int(config.get("maxPageSize", DEFAULT_MAX_PAGE_SIZE)),
    )
    server = waitress.create_server(app, host=host, port=port, threads=8, ident="NetBox-lab")
    bound = int(server.effective_port)
    endpoint = {"host": host, "port": bound, "pid": os.getpid()}
    _write_json(state_dir / ENDPOINT_FILE, endpoint)
    print(f"NetBox simulator on http://{host}:{bound}/api/", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.netbox", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=LAB_PORT)
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("the lab binds loopback addresses only")
    serve(args.state_dir.resolve(), args.host, args.port)


if __name__ == "__main__":
    main()
