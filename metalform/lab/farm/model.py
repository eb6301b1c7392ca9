"""What one farm BMC serves, as plain data: models, attribute registries, systems, BIOS.

A farm BMC holds one ComputerSystem (`System.Embedded.1`, as an iDRAC names it) whose BIOS
attributes come from the attribute registry of its hardware model. Registries are built once
per model and shared by every BMC of that model, as in a real fleet; their bytes are
serialised once. Writes to `Bios/Settings` are staged and take effect at the next reset or
power-on; power transitions are immediate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

SYSTEM_ID = "System.Embedded.1"
SYSTEM_PATH = f"/redfish/v1/Systems/{SYSTEM_ID}"
RESET_TYPES = ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart"]
BOOT_TARGETS = ["None", "Pxe", "Cd", "Hdd", "BiosSetup", "UefiHttp"]

# The attributes Metalform's benches and tests declare; the rest pad a registry to a vendor's
# size (an iDRAC 9 publishes about 350 BIOS attributes, an iLO 6 about 250).
_CORE: tuple[tuple[str, str, Any, tuple[str, ...], int | None, int | None], ...] = (
    ("BootMode", "Enumeration", "Uefi", ("Uefi", "Bios"), None, None),
    ("ProcTurboMode", "Enumeration", "Enabled", ("Enabled", "Disabled"), None, None),
    ("ProcVirtualization", "Enumeration", "Enabled", ("Enabled", "Disabled"), None, None),
    ("SriovGlobalEnable", "Enumeration", "Disabled", ("Enabled", "Disabled"), None, None),
    ("LogicalProc", "Enumeration", "Enabled", ("Enabled", "Disabled"), None, None),
    (
        "WorkloadProfile",
        "Enumeration",
        "Balanced",
        ("Balanced", "HighPerformance", "PowerSaving"),
        None,
        None,
    ),
    ("NumaNodesPerSocket", "Integer", 1, (), 1, 4),
)


@dataclass(frozen=True)
class HardwareModel:
    """A server model: its manufacturer, name and the BIOS attribute registry it publishes."""

    manufacturer: str
    name: str
    registry_id: str
    """`<RegistryName>.<version>` as a Bios resource's `AttributeRegistry` names it."""
    attributes: int = 300
    """Registry size: the core attributes plus padding up to this many."""

    def entries(self) -> list[dict[str, Any]]:
        """The registry's `RegistryEntries.Attributes`."""
        out: list[dict[str, Any]] = []
        for name, kind, default, values, lower, upper in _CORE:
            entry: dict[str, Any] = {
                "AttributeName": name,
                "DisplayName": name,
                "Type": kind,
                "DefaultValue": default,
                "ReadOnly": False,
                "ResetRequired": True,
            }
            if values:
                entry["Value"] = [{"ValueName": v, "ValueDisplayName": v} for v in values]
            if lower is not None:
                entry["LowerBound"], entry["UpperBound"] = lower, upper
            out.append(entry)
        for i in range(max(0, self.attributes - len(out))):
            out.append(
                {
                    "AttributeName": f"Vendor{i:03d}",
                    "DisplayName": f"Vendor setting {i}",
                    "HelpText": "A setting this fleet does not manage, here for size.",
                    "Type": "Enumeration",
                    "DefaultValue": "Auto",
                    "ReadOnly": i % 7 == 0,
                    "ResetRequired": True,
                    "Value": [
                        {"ValueName": v, "ValueDisplayName": v}
                        for v in ("Auto", "Enabled", "Disabled")
                    ],
                }
            )
        return out

    def defaults(self) -> dict[str, Any]:
        return {e["AttributeName"]: e["DefaultValue"] for e in self.entries()}


DEFAULT_MODELS: tuple[HardwareModel, ...] = (
    HardwareModel("Dell Inc.", "PowerEdge R760", "FarmDellBiosAttributeRegistry.v1_2_0", 350),
    HardwareModel("HPE", "ProLiant DL380 Gen11", "FarmHpeBiosAttributeRegistry.v1_1_0", 250),
    HardwareModel("Supermicro", "SYS-221H-TNR", "FarmSmcBiosAttributeRegistry.v1_0_0", 300),
)


def dumps(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


class Registry:
    """A model's registry: the three documents sushy walks to find it, serialised once."""

    def __init__(self, model: HardwareModel) -> None:
        self.model = model
        self.id = model.registry_id
        base = f"/redfish/v1/Registries/{self.id}"
        self.file_path = base
        self.document_path = f"{base}/Registry"
        self.file = dumps(
            {
                "@odata.type": "#MessageRegistryFile.v1_1_0.MessageRegistryFile",
                "@odata.id": base,
                "Id": self.id,
                "Name": f"{model.name} BIOS Attribute Registry File",
                "Registry": self.id,
                "Languages": ["en"],
                "Location": [{"Language": "en", "Uri": self.document_path}],
            }
        )
        self.document = dumps(
            {
                "@odata.type": "#AttributeRegistry.v1_3_0.AttributeRegistry",
                "@odata.id": self.document_path,
                "Id": self.id,
                "Name": f"{model.name} BIOS Attribute Registry",
                "Language": "en",
                "OwningEntity": model.manufacturer,
                "RegistryVersion": self.id.rsplit(".v", 1)[-1].replace("_", "."),
                "SupportedSystems": [{"ProductName": model.name, "SystemId": model.name}],
                "RegistryEntries": {"Attributes": model.entries()},
            }
        )


@dataclass
class FarmSystem:
    """The live state of one farm BMC's system."""

    model: HardwareModel
    serial: str
    power: str = "On"
    boot_target: str = "None"
    boot_enabled: str = "Disabled"
    bios: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    _cache: dict[str, bytes] = field(default_factory=dict, repr=False)

    def changed(self) -> None:
        self._cache.clear()

    def reset(self, kind: str) -> bool:
        """Apply a ResetType; staged BIOS values take effect when the machine (re)starts."""
        if kind not in RESET_TYPES:
            return False
        starts = kind in ("On", "ForceRestart", "GracefulRestart") and not (
            kind == "On" and self.power == "On"
        )
        self.power = "Off" if kind in ("ForceOff", "GracefulShutdown") else "On"
        if starts and self.pending:
            self.bios.update(self.pending)
            self.pending = {}
        self.changed()
        return True

    def system_json(self) -> bytes:
        cached = self._cache.get("system")
        if cached is None:
            cached = self._cache["system"] = dumps(
                {
                    "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
                    "@odata.id": SYSTEM_PATH,
                    "Id": SYSTEM_ID,
                    "Name": "System",
                    "SystemType": "Physical",
                    "Manufacturer": self.model.manufacturer,
                    "Model": self.model.name,
                    "SerialNumber": self.serial,
                    "UUID": self.serial,
                    "PowerState": self.power,
                    "Status": {"State": "Enabled", "Health": "OK"},
                    "Boot": {
                        "BootSourceOverrideEnabled": self.boot_enabled,
                        "BootSourceOverrideTarget": self.boot_target,
                        "BootSourceOverrideTarget@Redfish.AllowableValues": BOOT_TARGETS,
                        "BootSourceOverrideMode": "UEFI",
                    },
                    "Bios": {"@odata.id": f"{SYSTEM_PATH}/Bios"},
                    "Actions": {
                        "#ComputerSystem.Reset": {
                            "target": f"{SYSTEM_PATH}/Actions/ComputerSystem.Reset",
                            "ResetType@Redfish.AllowableValues": RESET_TYPES,
                        }
                    },
                }
            )
        return cached

    def bios_json(self) -> bytes:
        cached = self._cache.get("bios")
        if cached is None:
            cached = self._cache["bios"] = dumps(
                {
                    "@odata.type": "#Bios.v1_2_0.Bios",
                    "@odata.id": f"{SYSTEM_PATH}/Bios",
                    "Id": "Bios",
                    "Name": "BIOS Configuration Current Settings",
                    "AttributeRegistry": self.model.registry_id,
                    "Attributes": self.bios,
                    "@Redfish.Settings": {
                        "@odata.type": "#Settings.v1_3_0.Settings",
                        "SettingsObject": {"@odata.id": f"{SYSTEM_PATH}/Bios/Settings"},
                        "SupportedApplyTimes": ["OnReset"],
                    },
                    "Actions": {
                        "#Bios.ResetBios": {"target": f"{SYSTEM_PATH}/Bios/Actions/Bios.ResetBios"}
                    },
                }
            )
        return cached

    def settings_json(self) -> bytes:
        cached = self._cache.get("settings")
        if cached is None:
            cached = self._cache["settings"] = dumps(
                {
                    "@odata.type": "#Bios.v1_2_0.Bios",
                    "@odata.id": f"{SYSTEM_PATH}/Bios/Settings",
                    "Id": "Settings",
                    "Name": "BIOS Configuration Pending Settings",
                    "AttributeRegistry": self.model.registry_id,
                    "Attributes": self.pending,
                }
            )
        return cached
