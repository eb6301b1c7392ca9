"""The BMC farm: N Redfish BMCs in one asyncio process, one loopback address each.

Each BMC listens on its own 127.x.y.z address over HTTPS (one ECDSA P-256 self-signed
certificate for all, generated at start) and speaks just enough HTTP/1.1 for Redfish clients:
keep-alive, Content-Length bodies, `Connection: close` honoured, idle connections closed after
a while as a BMC's web server does. Every request waits a configurable latency (with jitter)
while holding one of the BMC's request slots, so requests beyond its limit queue, as on an
iDRAC or iLO. The farm counts requests per BMC and route and the peak of requests open at once.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import random
import secrets
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from metalform.lab.farm.faults import Fault
from metalform.lab.farm.model import (
    DEFAULT_MODELS,
    SYSTEM_PATH,
    FarmSystem,
    HardwareModel,
    Registry,
    dumps,
)
from metalform.lab.farm.tls import server_context

SESSIONS = "/redfish/v1/SessionService/Sessions"
IDLE_CLOSE = 5.0
"""Seconds an idle keep-alive connection stays open (iDRAC and iLO close them after a few)."""
MAX_HEADER = 16384

_ROOT = dumps(
    {
        "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
        "@odata.id": "/redfish/v1/",
        "Id": "RootService",
        "Name": "Farm BMC Service Root",
        "RedfishVersion": "1.15.0",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
        "Registries": {"@odata.id": "/redfish/v1/Registries"},
    }
)
_SYSTEMS = dumps(
    {
        "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection",
        "@odata.id": "/redfish/v1/Systems",
        "Name": "Computer System Collection",
        "Members@odata.count": 1,
        "Members": [{"@odata.id": SYSTEM_PATH}],
    }
)


@dataclass
class FarmConfig:
    count: int = 50
    latency: float = 0.1
    """Seconds per request (the BMC's own processing time)."""
    jitter: float = 0.2
    """Relative jitter: each request waits latency * (1 +- jitter)."""
    limit: int = 2
    """Requests a BMC serves at once; more queue."""
    username: str = "root"
    password: str = "farm-password"
    first_address: str = "127.64.0.1"
    port: int = 0
    """One port for every BMC (443, as in a datacenter, for `metalform import` over a range);
    0: each BMC takes a free port of its own address."""
    models: tuple[HardwareModel, ...] = DEFAULT_MODELS
    idle_close: float = IDLE_CLOSE
    sessions_only: bool = False
    """Basic authentication refused: clients log in to the SessionService (X-Auth-Token)."""
    faults: dict[int, Fault] = field(default_factory=dict)


@dataclass
class BmcStats:
    requests: int = 0
    routes: Counter[str] = field(default_factory=Counter)
    open: int = 0
    peak: int = 0
    connections: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "routes": dict(self.routes),
            "peak": self.peak,
            "connections": self.connections,
        }


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def _error(status: int, message: str) -> Response:
    return Response(status, dumps({"error": {"code": "Base.1.0.GeneralError", "message": message}}))


class Dropped(Exception):
    """The BMC closes the connection without answering."""


class FarmBmc:
    """One BMC: its address, system, request slots, faults and counters."""

    def __init__(self, farm: Farm, index: int, address: str, model: HardwareModel) -> None:
        self.farm = farm
        self.index = index
        self.address = address
        self.port = 0
        serial = f"FARM{index:06d}"
        self.system = FarmSystem(model=model, serial=serial, bios=model.defaults())
        self.registry = farm.registries[model.registry_id]
        self.slots = asyncio.Semaphore(farm.config.limit)
        self.stats = BmcStats()
        self.fault: Fault | None = farm.config.faults.get(index)
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.port}"

    async def start(self, context: ssl.SSLContext) -> None:
        self.server = await asyncio.start_server(
            self._connection,
            host=self.address,
            port=self.farm.config.port,
            ssl=context,
            backlog=64,
        )
        self.port = self.server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        task = asyncio.current_task()
        assert task is not None  # a connection handler always runs in a task
        self.farm.connections[task] = writer
        try:
            while True:
                try:
                    head = await asyncio.wait_for(
                        reader.readuntil(b"\r\n\r\n"), self.farm.config.idle_close
                    )
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                method, path, headers = parse_head(head)
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                try:
                    response = await self._serve(method, path, headers, body, reader)
                except Dropped:
                    return
                close = headers.get("connection", "").lower() == "close"
                writer.write(encode(response, close))
                await writer.drain()
                if close:
                    return
        except (ConnectionError, ssl.SSLError, OSError, ValueError):
            return
        finally:
            self.farm.connections.pop(task, None)
            writer.close()

    async def _serve(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        reader: asyncio.StreamReader,
    ) -> Response:
        stats = self.stats
        stats.requests += 1
        stats.open += 1
        stats.peak = max(stats.peak, stats.open)
        try:
            async with self.slots:
                delay = self.farm.delay()
                fault = self.fault
                if fault is not None:
                    if fault.kind == "slow":
                        delay *= 10
                    elif fault.kind == "hang":
                        # Until the client gives up (closes) or the fault is cleared, so that
                        # hung requests do not hold the BMC's slots for the next test.
                        while self.fault is fault and not reader.at_eof():
                            await asyncio.sleep(0.05)
                        raise Dropped
                    elif fault.kind == "drop":
                        await asyncio.sleep(delay)
                        raise Dropped
                    elif fault.kind == "unavailable":
                        await asyncio.sleep(delay)
                        return Response(
                            503,
                            dumps({"error": {"message": "the BMC is busy"}}),
                            {"Retry-After": str(fault.retry_after)},
                        )
                await asyncio.sleep(delay)
                return self._route(method, path, headers, body)
        finally:
            stats.open -= 1

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/redfish/v1":
            self.stats.routes["root"] += 1
            return Response(200, self.farm.root) if method == "GET" else _error(405, "read-only")
        if path.startswith(SESSIONS) and method in ("POST", "DELETE"):
            self.stats.routes[f"session.{method.lower()}"] += 1
            return self.farm.session(method, path, body)
        token = headers.get("x-auth-token")
        by_session = token is not None and token in self.farm.tokens
        by_basic = not self.farm.config.sessions_only and (
            headers.get("authorization") == self.farm.authorization
        )
        if not (by_session or by_basic):
            self.stats.routes["unauthorized"] += 1
            return Response(401, b"", {"WWW-Authenticate": 'Basic realm="farm"'})
        system = self.system
        if method == "GET":
            route, doc = self._document(path)
            self.stats.routes[route] += 1
            return Response(200, doc) if doc is not None else _error(404, f"{path} not found")
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "the body is not JSON")
        if method == "PATCH" and path == f"{SYSTEM_PATH}/Bios/Settings":
            self.stats.routes["bios.patch"] += 1
            attributes = data.get("Attributes")
            if not isinstance(attributes, dict):
                return _error(400, "Attributes must be an object")
            system.pending.update(attributes)
            system.changed()
            return Response(204)
        if method == "PATCH" and path == SYSTEM_PATH:
            self.stats.routes["system.patch"] += 1
            boot = data.get("Boot") or {}
            system.boot_target = boot.get("BootSourceOverrideTarget", system.boot_target)
            system.boot_enabled = boot.get("BootSourceOverrideEnabled", system.boot_enabled)
            system.changed()
            return Response(204)
        if method == "POST" and path == f"{SYSTEM_PATH}/Actions/ComputerSystem.Reset":
            self.stats.routes["reset"] += 1
            if not system.reset(str(data.get("ResetType"))):
                return _error(400, f"ResetType {data.get('ResetType')!r} is not supported")
            return Response(204)
        return _error(405, f"{method} {path} is not supported")

    def _document(self, path: str) -> tuple[str, bytes | None]:
        system, registry = self.system, self.registry
        if path == "/redfish/v1/Systems":
            return "systems", _SYSTEMS
        if path == SYSTEM_PATH:
            return "system", system.system_json()
        if path == f"{SYSTEM_PATH}/Bios":
            return "bios", system.bios_json()
        if path == f"{SYSTEM_PATH}/Bios/Settings":
            return "settings", system.settings_json()
        if path == "/redfish/v1/Registries":
            return "registries", self.farm.registry_collection(registry)
        if path == registry.file_path:
            return "registry.file", registry.file
        if path == registry.document_path:
            return "registry", registry.document
        return "unknown", None


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def encode(response: Response, close: bool) -> bytes:
    head = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Error')}",
        f"Content-Length: {len(response.body)}",
        "Connection: close" if close else "Connection: keep-alive",
    ]
    if response.body:
        head.append("Content-Type: application/json")
    head.extend(f"{k}: {v}" for k, v in response.headers.items())
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


def addresses(first: str, count: int) -> list[str]:
    """`count` loopback addresses from `first`, skipping .0 and .255 (as a BMC network does)."""
    out: list[str] = []
    current = ipaddress.IPv4Address(first)
    loopback = ipaddress.IPv4Network("127.0.0.0/8")
    while len(out) < count:
        if current not in loopback:
            raise ValueError(f"{count} BMCs from {first} leave 127.0.0.0/8")
        if str(current).rsplit(".", 1)[1] not in ("0", "255"):
            out.append(str(current))
        current += 1
    return out


class Farm:
    """N BMCs on one event loop."""

    def __init__(self, config: FarmConfig) -> None:
        self.config = config
        self.tokens: dict[str, str] = {}
        root = json.loads(_ROOT)
        if config.sessions_only:
            root["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
            root["Links"] = {"Sessions": {"@odata.id": SESSIONS}}
        self.root = dumps(root)
        token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
        self.authorization = f"Basic {token}"
        self.registries = {m.registry_id: Registry(m) for m in config.models}
        self._collections: dict[str, bytes] = {}
        self._random = random.Random(1)
        self.bmcs: list[FarmBmc] = []
        # the open client connections, cancelled on stop (closing a listening socket does
        # not end its connections, and a task left pending is destroyed with a warning later)
        self.connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.started = 0.0

    def session(self, method: str, path: str, body: bytes) -> Response:
        """Log in (POST to the Sessions collection) or out (DELETE of a session)."""
        if method == "DELETE":
            self.tokens = {t: p for t, p in self.tokens.items() if p != path}
            return Response(204)
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "the body is not JSON")
        if (data.get("UserName"), data.get("Password")) != (
            self.config.username,
            self.config.password,
        ):
            return Response(401, b"", {"WWW-Authenticate": 'Basic realm="farm"'})
        token = secrets.token_hex(16)
        location = f"{SESSIONS}/{len(self.tokens) + 1}"
        self.tokens[token] = location
        doc = dumps({"@odata.id": location, "Id": location.rsplit("/", 1)[1]})
        return Response(201, doc, {"X-Auth-Token": token, "Location": location})

    def delay(self) -> float:
        jitter = self.config.jitter
        return self.config.latency * (1 + jitter * (2 * self._random.random() - 1))

    def registry_collection(self, registry: Registry) -> bytes:
        doc = self._collections.get(registry.id)
        if doc is None:
            doc = self._collections[registry.id] = dumps(
                {
                    "@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
                    "@odata.id": "/redfish/v1/Registries",
                    "Name": "Registry File Collection",
                    "Members@odata.count": 3,
                    "Members": [
                        {"@odata.id": "/redfish/v1/Registries/Base.1.16.0"},
                        {"@odata.id": "/redfish/v1/Registries/Messages"},
                        {"@odata.id": registry.file_path},
                    ],
                }
            )
        return doc

    async def start(self) -> None:
        context = server_context()
        models = self.config.models
        for index, address in enumerate(addresses(self.config.first_address, self.config.count)):
            bmc = FarmBmc(self, index, address, models[index % len(models)])
            await bmc.start(context)
            self.bmcs.append(bmc)
        self.started = time.monotonic()

    async def stop(self) -> None:
        for bmc in self.bmcs:
            if bmc.server is not None:
                bmc.server.close()
        for bmc in self.bmcs:
            if bmc.server is not None:
                await bmc.server.wait_closed()
        open_connections = list(self.connections.items())
        for task, writer in open_connections:
            writer.transport.abort()  # no TLS goodbye with a client that may never answer
            task.cancel()
        await asyncio.gather(*(task for task, _ in open_connections), return_exceptions=True)
        await asyncio.sleep(0)  # the aborted transports close their sockets on this turn

    def set_fault(self, index: int, fault: Fault | None) -> None:
        self.bmcs[index].fault = fault

    def reset_stats(self) -> None:
        for bmc in self.bmcs:
            bmc.stats = BmcStats()

    def stats(self) -> list[dict[str, Any]]:
        return [bmc.stats.as_json() for bmc in self.bmcs]
