"""Run sushy-emulator with the lab driver: `python -m metalform.lab.redfish_emulator --config FILE`.

sushy-emulator selects its systems driver from the config, and with
`SUSHY_EMULATOR_FAKE_DRIVER` it always instantiates `fakedriver.FakeDriver`; there is no
setting for a driver class. This launcher therefore swaps `LabDriver` in before the app
creates its driver, and then adjusts the few routes the stock app serves without the
driver's help (BIOS pending settings, the attribute registry, Manufacturer/Model and the
boot override frequency on the System). It binds the socket itself so a port of 0 works and
writes the port it got to the endpoint file the parent waits for.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from metalform.lab.redfish import BiosAttribute, FaultBoard, FaultKind
from metalform.lab.redfish_firmware import IMAGES_DIR, LabImages

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

HANG_LIMIT = 120.0
"""A hung request is answered (503) after this long even if its fault stays set."""
SYSTEMS_PREFIX = "/redfish/v1/Systems/"
ACCOUNT_SERVICE = "/redfish/v1/AccountService"
ACCOUNT_SERVICE_TARGET = "AccountService"


def _json_response(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _system_of(path: str) -> str | None:
    """The fault target of a request: its system, or `AccountService` for the accounts (so
    a test can hang a BMC's password change while its systems still answer)."""
    if path.startswith(SYSTEMS_PREFIX):
        return path[len(SYSTEMS_PREFIX) :].split("/", 1)[0] or None
    if path.startswith(ACCOUNT_SERVICE):
        return ACCOUNT_SERVICE_TARGET
    return None


class LabMiddleware:
    """Fault injection and request statistics, in front of authentication.

    `/lab/v1/stats` reports how many Redfish requests were served and the most that were in
    flight at once, which is how tests check a client's per-BMC concurrency limit.
    """

    def __init__(self, app: WsgiApp, faults: FaultBoard, images: LabImages | None = None) -> None:
        self.app = app
        self.faults = faults
        self.images = images
        self._lock = threading.Lock()
        self._in_flight = 0
        self._max_in_flight = 0
        self._requests = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/lab/v1/"):
            return self._admin(environ, start_response, path)
        with self._lock:
            self._requests += 1
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            identity = _system_of(path)
            fault = self.faults.fault_for(identity)
            if fault == FaultKind.ERROR:
                return _json_response(
                    start_response,
                    "500 Internal Server Error",
                    {"error": {"code": "Base.1.0.InternalError", "message": "injected fault"}},
                )
            if fault == FaultKind.ECHO:
                # Some BMCs quote the whole request in their errors, credentials included.
                echoed = environ.get("HTTP_AUTHORIZATION", "(none)")
                return _json_response(
                    start_response,
                    "500 Internal Server Error",
                    {
                        "error": {
                            "code": "Base.1.0.InternalError",
                            "message": f"cannot serve request with Authorization: {echoed}",
                        }
                    },
                )
            if fault == FaultKind.HANG and self._hang(identity):
                return _json_response(
                    start_response,
                    "503 Service Unavailable",
                    {"error": {"code": "Base.1.0.GeneralError", "message": "hung request"}},
                )
            body = self.app(environ, start_response)
            # Produce the whole body here so the request counts as in flight until it is done.
            try:
                return [b"".join(body)]
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
        finally:
            with self._lock:
                self._in_flight -= 1

    def _hang(self, identity: str | None) -> bool:
        """Wait while the hang fault stays set; True if it was never cleared."""
        deadline = time.monotonic() + HANG_LIMIT
        while time.monotonic() < deadline:
            if self.faults.fault_for(identity) != FaultKind.HANG:
                return False
            time.sleep(0.05)
        return True

    def _admin(
        self, environ: dict[str, Any], start_response: StartResponse, path: str
    ) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        served = self.images.handle(environ, start_response, path) if self.images else None
        if served is not None:
            return served
        if path == "/lab/v1/stats" and method == "GET":
            with self._lock:
                stats = {
                    "requests": self._requests,
                    "inFlight": self._in_flight,
                    "maxInFlight": self._max_in_flight,
                }
            return _json_response(start_response, "200 OK", stats)
        if path == "/lab/v1/stats/reset" and method == "POST":
            with self._lock:
                self._requests = 0
                self._max_in_flight = self._in_flight
            return _json_response(start_response, "200 OK", {})
        return _json_response(start_response, "404 Not Found", {"error": {"message": path}})


def _speed_up(emulator: Any) -> None:
    """Take two per-request costs out of the stock app, so 1,000 systems stay quick.

    The auth middleware runs bcrypt on every request (a BMC with sessions would not), and the
    indicator LED driver opens SQLite twice per System GET. Verified credentials are kept
    (failures are checked every time), and LEDs live in memory (no need to keep them).
    """
    import hashlib

    from sushy_tools.emulator import auth_basic
    from sushy_tools.emulator.resources import indicators

    verified: set[tuple[str, int, str, bytes]] = set()
    check = auth_basic.authenticate

    def authenticate(auth_file: str, username: str, password: bytes) -> dict[str, str]:
        # The file's mtime is part of the key: a password changed through the lab's
        # AccountService must stop the old one from working at once.
        mtime = os.stat(auth_file).st_mtime_ns
        key = (auth_file, mtime, username, hashlib.sha256(password).digest())
        if key not in verified:
            result: dict[str, str] = check(auth_file, username, password)
            verified.add(key)
            return result
        return {"HTTP_X_USER": username, "HTTP_X_USER_NAME": username}

    auth_basic.authenticate = authenticate

    class MemoryIndicators(indicators.StaticDriver):  # type: ignore[misc]
        def __init__(self, config: Any, logger: Any) -> None:
            self._config, self._logger = config, logger
            self._indicators = dict(config.get("SUSHY_EMULATOR_INDICATOR_LEDS", {}))

    shared: list[Any] = []

    def memory_indicators(app: Any) -> Any:
        if not shared:
            shared.append(MemoryIndicators(app.config, app.logger))
        return shared[0]

    emulator.Application.indicators = property(memory_indicators)


def build_app(config: dict[str, Any]) -> Any:
    """The sushy-emulator Flask app, configured and wired to the lab driver."""
    # The emulator imports the OpenStack drivers at import time (0.2 s of openstacksdk);
    # the lab never uses them, and a missing module makes them report "not loaded".
    sys.modules.setdefault("openstack", None)  # type: ignore[arg-type]
    from sushy_tools.emulator import main as emulator
    from sushy_tools.emulator.resources.systems import fakedriver

    from metalform.lab.redfish_driver import LabDriver

    fakedriver.FakeDriver = LabDriver
    _speed_up(emulator)
    app = emulator.app
    app.configure(extra_config=config)
    lab = config["LAB"]
    registry = [BiosAttribute.from_json(a) for a in lab["biosRegistry"]]
    from metalform.lab.redfish_routes import LabRoutes

    LabRoutes(app, registry, lab["registryId"]).install()
    faults_file = Path(lab["faultsFile"])
    driver = app.systems  # create the driver now, not on the first request
    images = LabImages(faults_file.parent / IMAGES_DIR, driver.firmware_settings)
    app.wsgi_app = LabMiddleware(app.wsgi_app, FaultBoard(faults_file), images)
    return app


def _exit_with_parent(parent: int) -> None:
    """Exit once the process that started the emulator is gone (it was reparented)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve the emulator until terminated."""
    from waitress.server import create_server

    parser = argparse.ArgumentParser(prog="python -m lab.redfish_emulator")
    parser.add_argument("--config", required=True, help="JSON config written by RedfishPeer")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    app = build_app(config)
    app.logger.setLevel(logging.WARNING)
    parent = config["LAB"].get("parentPid")
    if parent:
        threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    host = config["SUSHY_EMULATOR_LISTEN_IP"]
    # waitress, not Werkzeug's development server: that one closes the connection after
    # every response, where a real BMC keeps HTTP/1.1 connections alive. The thread pool is
    # large enough that a few hung requests (the `hang` fault) do not starve the others.
    server = create_server(
        app,
        host=host,
        port=int(config["SUSHY_EMULATOR_LISTEN_PORT"]),
        threads=int(config["LAB"].get("threads", 24)),
        connection_limit=2000,
        ident="metalform-lab-bmc",
    )
    port = server.effective_port
    endpoint = Path(config["LAB"]["endpointFile"])
    tmp = endpoint.with_suffix(".tmp")
    tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}), encoding="utf-8")
    os.replace(tmp, endpoint)
    print(f"Redfish lab on http://{host}:{port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
