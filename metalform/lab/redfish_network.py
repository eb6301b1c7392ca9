"""The lab BMC's Manager `NetworkProtocol`: NTP servers, IPMI/SSH/HTTP(S) enablement, HostName.

The stock emulator serves Managers (and the systems' `Links.ManagedBy`) but no
NetworkProtocol. Here each Manager gets one, kept in a JSON file in the lab's state directory
so that it outlives an emulator restart. Turning a protocol off is recorded, not enforced:
the emulator keeps answering HTTPS (Metalform refuses that change at plan time anyway).
Imported by the emulator process only.
"""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path
from typing import Any

import flask
from sushy_tools import error

MANAGERS = "/redfish/v1/Managers"
STATE_FILE = "network-protocol.json"
PROTOCOLS = ("IPMI", "SSH", "HTTP", "HTTPS")
DEFAULT: dict[str, Any] = {
    "HostName": "lab-bmc",
    "NTP": {"ProtocolEnabled": True, "NTPServers": ["0.pool.ntp.org"]},
    "IPMI": {"ProtocolEnabled": True, "Port": 623},
    "SSH": {"ProtocolEnabled": True, "Port": 22},
    "HTTP": {"ProtocolEnabled": True, "Port": 80},
    "HTTPS": {"ProtocolEnabled": True, "Port": 443},
}


def _respond(body: object, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, content_type="application/json")


class LabNetwork:
    """NetworkProtocol of every Manager, by Manager id."""

    def __init__(self, state_dir: Path) -> None:
        self.state_file = state_dir / STATE_FILE
        self._lock = threading.Lock()
        self._stock_manager: Any = None

    def install(self, app: Any) -> None:
        app.add_url_rule(
            f"{MANAGERS}/<identity>/NetworkProtocol",
            "lab_network_protocol",
            self.protocol,
            methods=["GET", "PATCH"],
        )
        self._stock_manager = app.view_functions.get("manager_resource")
        if self._stock_manager is not None:
            app.view_functions["manager_resource"] = self.manager

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.state_file.exists():
            return {}
        found: dict[str, dict[str, Any]] = json.loads(self.state_file.read_text(encoding="utf-8"))
        return found

    def _document(self, identity: str, state: dict[str, Any]) -> dict[str, Any]:
        return {
            "@odata.type": "#ManagerNetworkProtocol.v1_9_0.ManagerNetworkProtocol",
            "@odata.id": f"{MANAGERS}/{identity}/NetworkProtocol",
            "Id": "NetworkProtocol",
            "Name": "Manager Network Protocol",
            **state,
        }

    def manager(self, identity: str) -> Any:
        """The stock Manager, linking its NetworkProtocol."""
        response = self._stock_manager(identity=identity)
        if not isinstance(response, flask.Response) or response.status_code != 200:
            return response
        doc = json.loads(response.get_data())
        doc["NetworkProtocol"] = {"@odata.id": f"{MANAGERS}/{identity}/NetworkProtocol"}
        response.set_data(json.dumps(doc))
        return response

    def protocol(self, identity: str) -> flask.Response:
        with self._lock:
            every = self._load()
            state = every.get(identity) or copy.deepcopy(DEFAULT)
            if flask.request.method == "GET":
                return _respond(self._document(identity, state))
            body = flask.request.get_json(silent=True)
            if not isinstance(body, dict):
                raise error.BadRequest("PATCH of NetworkProtocol needs a JSON object")
            _patch(state, body)
            every[identity] = state
            self.state_file.write_text(json.dumps(every), encoding="utf-8")
        return flask.Response(status=204)


def _patch(state: dict[str, Any], body: dict[str, Any]) -> None:
    """Apply the writable properties of a PATCH; anything else is a 400, as on a real BMC."""
    for key, value in body.items():
        if key == "HostName":
            if not isinstance(value, str):
                raise error.BadRequest("HostName must be a string")
            state["HostName"] = value
        elif key == "NTP" and isinstance(value, dict):
            ntp = state.setdefault("NTP", {})
            if "NTPServers" in value:
                servers = value["NTPServers"]
                if not isinstance(servers, list) or not all(isinstance(s, str) for s in servers):
                    raise error.BadRequest("NTP.NTPServers must be a list of strings")
                ntp["NTPServers"] = servers
            if "ProtocolEnabled" in value:
                ntp["ProtocolEnabled"] = bool(value["ProtocolEnabled"])
        elif key in PROTOCOLS and isinstance(value, dict) and "ProtocolEnabled" in value:
            state.setdefault(key, {})["ProtocolEnabled"] = bool(value["ProtocolEnabled"])
        else:
            raise error.BadRequest(f"NetworkProtocol property {key!r} cannot be patched")
