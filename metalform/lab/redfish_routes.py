"""The routes the lab's emulated BMC serves beyond the stock sushy-emulator app.

BIOS current and pending settings and the attribute registry come from the lab driver; the
System resource gains Manufacturer/Model and the boot override frequency, which the stock app
ignores. Imported by the emulator process only (flask comes with sushy-tools).
"""

from __future__ import annotations

import json
from typing import Any

import flask
from sushy_tools import error

from metalform.lab.redfish import BiosAttribute
from metalform.lab.redfish_firmware_routes import FirmwareRoutes

SYSTEMS_PREFIX = "/redfish/v1/Systems/"
LAB_BOOT_TARGETS = ["None", "Pxe", "Cd", "Hdd", "BiosSetup", "UefiHttp"]


def respond(body: object, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, content_type="application/json")


def system_path(identity: str) -> str:
    return f"{SYSTEMS_PREFIX}{identity}"


class LabRoutes:
    """Route handlers bound to the emulator app and the lab's attribute registry."""

    def __init__(self, app: Any, registry: list[BiosAttribute], registry_id: str) -> None:
        self.app = app
        self.registry_id = registry_id
        self.file_path = f"/redfish/v1/Registries/{registry_id}"
        self.entries = [a.registry_entry() for a in registry]
        self.stock_system = app.view_functions["system_resource"]

    def install(self) -> None:
        app = self.app
        app.view_functions["bios"] = self.bios
        app.view_functions["bios_settings"] = self.bios_settings
        app.view_functions["registry_file_collection"] = self.registry_files
        app.view_functions["system_resource"] = self.system_resource
        app.add_url_rule(self.file_path, "lab_registry_file", self.registry_file)
        app.add_url_rule(f"{self.file_path}/Registry", "lab_registry", self.registry_document)
        FirmwareRoutes(app).install()
        self.install_accounts()
        self.install_network()

    def install_accounts(self) -> None:
        """The AccountService over the emulator's htpasswd file (when it authenticates)."""
        from pathlib import Path

        from metalform.lab.redfish_accounts import LabAccounts

        auth_file = self.app.config.get("SUSHY_EMULATOR_AUTH_FILE")
        if auth_file:
            LabAccounts(Path(auth_file)).install(self.app)

    def install_network(self) -> None:
        """Each Manager's NetworkProtocol, kept in the lab's state directory."""
        from pathlib import Path

        from metalform.lab.redfish_network import LabNetwork

        faults_file = self.app.config.get("LAB", {}).get("faultsFile")
        if faults_file:
            LabNetwork(Path(faults_file).parent).install(self.app)

    def bios(self, identity: str) -> flask.Response:
        path = system_path(identity)
        return respond(
            {
                "@odata.type": "#Bios.v1_1_0.Bios",
                "@odata.id": f"{path}/BIOS",
                "Id": "BIOS",
                "Name": "BIOS Configuration Current Settings",
                "AttributeRegistry": self.registry_id,
                "Attributes": self.app.systems.get_bios(identity),
                "@Redfish.Settings": {
                    "@odata.type": "#Settings.v1_3_0.Settings",
                    "SettingsObject": {"@odata.id": f"{path}/BIOS/Settings"},
                },
                "Actions": {"#Bios.ResetBios": {"target": f"{path}/BIOS/Actions/Bios.ResetBios"}},
            }
        )

    def bios_settings(self, identity: str) -> flask.Response:
        if flask.request.method == "PATCH":
            body = flask.request.get_json(silent=True)
            if not isinstance(body, dict) or "Attributes" not in body:
                raise error.BadRequest("PATCH of BIOS settings needs an Attributes object")
            self.app.systems.set_bios(identity, body["Attributes"])
            return flask.Response(status=204)
        return respond(
            {
                "@odata.type": "#Bios.v1_1_0.Bios",
                "@odata.id": f"{system_path(identity)}/BIOS/Settings",
                "Id": "Settings",
                "Name": "BIOS Configuration Pending Settings",
                "AttributeRegistry": self.registry_id,
                "Attributes": self.app.systems.get_pending_bios(identity),
            }
        )

    def registry_files(self) -> flask.Response:
        return respond(
            {
                "@odata.type": "#MessageRegistryFileCollection.MessageRegistryFileCollection",
                "@odata.id": "/redfish/v1/Registries",
                "Name": "Registry File Collection",
                "Members": [
                    {"@odata.id": "/redfish/v1/Registries/Messages"},
                    {"@odata.id": self.file_path},
                ],
                "Members@odata.count": 2,
            }
        )

    def registry_file(self) -> flask.Response:
        return respond(
            {
                "@odata.type": "#MessageRegistryFile.v1_1_0.MessageRegistryFile",
                "@odata.id": self.file_path,
                "Id": self.registry_id,
                "Name": "BIOS Attribute Registry File",
                "Languages": ["en"],
                "Registry": self.registry_id.rsplit(".", 1)[0] + ".1.0",
                "Location": [{"Language": "en", "Uri": f"{self.file_path}/Registry"}],
            }
        )

    def registry_document(self) -> flask.Response:
        return respond(
            {
                "@odata.type": "#AttributeRegistry.v1_3_0.AttributeRegistry",
                "@odata.id": f"{self.file_path}/Registry",
                "Id": self.registry_id,
                "Name": "Metalform lab BIOS attribute registry",
                "Language": "en",
                "OwningEntity": "Metalform Lab",
                "RegistryVersion": "1.0.0",
                "RegistryEntries": {"Attributes": self.entries},
            }
        )

    def system_resource(self, identity: str) -> Any:
        if flask.request.method == "PATCH":
            return self._patch_system(identity)
        response = self.stock_system(identity=identity)
        if not isinstance(response, flask.Response) or response.status_code != 200:
            return response
        systems = self.app.systems
        doc = json.loads(response.get_data())
        doc.update(systems.hardware(identity))
        boot = doc.setdefault("Boot", {})
        boot["BootSourceOverrideEnabled"] = systems.get_boot_enabled(identity)
        boot["BootSourceOverrideTarget@Redfish.AllowableValues"] = LAB_BOOT_TARGETS
        response.set_data(json.dumps(doc))
        return response

    def _patch_system(self, identity: str) -> Any:
        body = flask.request.get_json(silent=True) or {}
        boot = body.get("Boot") or {}
        enabled = boot.get("BootSourceOverrideEnabled")
        rest = {k for k in boot if k != "BootSourceOverrideEnabled"}
        # The stock handler ignores the frequency and refuses a Boot with nothing else in it.
        if enabled is not None and not rest and "IndicatorLED" not in body:
            self.app.systems.set_boot_enabled(identity, enabled)
            return flask.Response(status=204)
        response = self.stock_system(identity=identity)
        if enabled is not None and getattr(response, "status_code", 0) < 300:
            self.app.systems.set_boot_enabled(identity, enabled)
        return response
