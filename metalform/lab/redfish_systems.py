"""The lab BMC's systems and BIOS: what a `RedfishPeer` serves, as plain data.

`LabSystem` is one emulated server (its Redfish identity, power, boot source and initial BIOS
values); `BiosAttribute` one entry of the BIOS attribute registry the lab publishes, which also
says which values the BMC refuses. Both round-trip through the emulator's JSON configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

BiosValue = str | int | bool

REGISTRY_ID = "LabBiosAttributeRegistry.v1_0_0"
"""The Id of the lab's BIOS attribute registry, named by every system's Bios resource."""

_IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BiosAttribute:
    """One entry of the lab's BIOS attribute registry."""

    name: str
    type: str = "Enumeration"
    """Enumeration, Integer, String or Boolean (Redfish AttributeRegistry types)."""
    default: BiosValue = ""
    values: tuple[str, ...] = ()
    """Allowed values of an Enumeration."""
    lower: int | None = None
    upper: int | None = None
    read_only: bool = False
    max_length: int | None = None
    display_name: str = ""

    def problem(self, value: object) -> str | None:
        """Why the BMC refuses `value` for this attribute, or None when it accepts it."""
        if self.read_only:
            return f"attribute {self.name} is read-only"
        if self.type == "Enumeration":
            if value not in self.values:
                return (
                    f"value {value!r} is not allowed for {self.name} (allowed: {list(self.values)})"
                )
        elif self.type == "Integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"attribute {self.name} takes an integer, not {value!r}"
            if self.lower is not None and value < self.lower:
                return f"value {value} of {self.name} is below its lower bound {self.lower}"
            if self.upper is not None and value > self.upper:
                return f"value {value} of {self.name} is above its upper bound {self.upper}"
        elif self.type == "Boolean":
            if not isinstance(value, bool):
                return f"attribute {self.name} takes a boolean, not {value!r}"
        elif self.type == "String":
            if not isinstance(value, str):
                return f"attribute {self.name} takes a string, not {value!r}"
            if self.max_length is not None and len(value) > self.max_length:
                return f"value of {self.name} is longer than {self.max_length} characters"
        return None

    def registry_entry(self) -> dict[str, Any]:
        """The attribute as a Redfish AttributeRegistry `Attributes` entry."""
        entry: dict[str, Any] = {
            "AttributeName": self.name,
            "DisplayName": self.display_name or self.name,
            "Type": self.type,
            "DefaultValue": self.default,
            "ReadOnly": self.read_only,
            "Immutable": self.read_only,
            "Hidden": False,
            "ResetRequired": True,
        }
        if self.type == "Enumeration":
            entry["Value"] = [{"ValueName": v, "ValueDisplayName": v} for v in self.values]
        if self.lower is not None:
            entry["LowerBound"] = self.lower
        if self.upper is not None:
            entry["UpperBound"] = self.upper
        if self.max_length is not None:
            entry["MaxLength"] = self.max_length
        return entry

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form, read back by `from_json`."""
        data = asdict(self)
        data["values"] = list(self.values)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BiosAttribute:
        """The inverse of `to_json`."""
        return cls(**{**data, "values": tuple(data.get("values", ()))})


_ON_OFF = ("Enabled", "Disabled")

DEFAULT_BIOS_REGISTRY: tuple[BiosAttribute, ...] = (
    BiosAttribute("ProcTurboMode", values=_ON_OFF, default="Enabled", display_name="Turbo Boost"),
    BiosAttribute("LogicalProc", values=_ON_OFF, default="Enabled", display_name="Hyper-Threading"),
    BiosAttribute("ProcVirtualization", values=_ON_OFF, default="Enabled"),
    BiosAttribute("SriovGlobalEnable", values=_ON_OFF, default="Disabled"),
    BiosAttribute("BootMode", values=("Uefi", "Bios"), default="Uefi"),
    BiosAttribute(
        "WorkloadProfile",
        values=("Balanced", "HighPerformance", "PowerSaving"),
        default="Balanced",
    ),
    BiosAttribute("NumaNodesPerSocket", type="Integer", default=1, lower=1, upper=4),
    BiosAttribute("PowerCapWatts", type="Integer", default=0, lower=0, upper=2000),
    BiosAttribute("ProcCoreCount", type="Integer", default=32, read_only=True),
    BiosAttribute("AssetTag", type="String", default="", max_length=32),
)
"""The registry the lab publishes unless told otherwise."""


@dataclass(frozen=True)
class LabSystem:
    """One emulated server behind the lab BMC."""

    identity: str
    """The Redfish System Id (also its UUID and the `bmc.systemId` of a Server)."""
    name: str = ""
    manufacturer: str = "Metalform Lab"
    model: str = "Virtual Server"
    power_state: str = "Off"
    bios: Mapping[str, BiosValue] = field(default_factory=dict)
    """Initial BIOS values; attributes not given take their registry default."""
    boot_source: str = "Hdd"

    def __post_init__(self) -> None:
        if not _IDENTITY.match(self.identity):
            raise ValueError(f"system identity {self.identity!r} must be letters, digits, ._-")
        if self.power_state not in ("On", "Off"):
            raise ValueError(f"power_state of {self.identity} must be On or Off")

    def emulator_entry(self) -> dict[str, Any]:
        """The system as an entry of sushy-emulator's SUSHY_EMULATOR_FAKE_SYSTEMS."""
        return {
            "uuid": self.identity,
            "name": self.name or self.identity,
            "power_state": self.power_state,
            # True would make the fake driver send each change to a localhost port.
            "external_notifier": False,
            "nics": [],
            "manufacturer": self.manufacturer,
            "model": self.model,
            "bios": dict(self.bios),
            "boot_device": self.boot_source,
        }

    @classmethod
    def from_emulator_entry(cls, entry: Mapping[str, Any]) -> LabSystem:
        """The inverse of `emulator_entry`."""
        return cls(
            identity=entry["uuid"],
            name=entry.get("name", ""),
            manufacturer=entry.get("manufacturer", ""),
            model=entry.get("model", ""),
            power_state=entry.get("power_state", "Off"),
            bios=dict(entry.get("bios", {})),
            boot_source=entry.get("boot_device", "Hdd"),
        )
