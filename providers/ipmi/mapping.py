"""IPMI wire data <-> Metalform's live state: pure functions, no I/O.

The byte layouts are those of the IPMI 2.0 specification: Get Chassis Status (section 28.2),
Chassis Control (28.3), Get System Boot Options parameter 5, "boot flags" (28.13, table 28-14)
and Get Device ID (20.1). Response data here never includes the completion code.

Boot override, read honestly. The boot flags carry a *valid* bit, a *persistent* bit and a
device selector. Metalform reports:

- valid bit set: `boot.source` from the selector and `boot.mode` (`Continuous` when persistent,
  else `Once`);
- valid bit clear and selector 0: `boot.source: None` (no override is requested; no mode);
- valid bit clear and a selector other than 0: nothing. Real BMCs keep the selector after a
  one-time override has been used and clear the valid bit, so the device is not in force; some
  BMCs (OpenIPMI's `ipmi_sim`) never set the valid bit at all, so the device may be in force.
  The two cannot be told apart, and the planner compares only keys present on both sides; the
  raw reading stays visible in the `bootOverride` fact.

One exception, for the read-back right after `boot.set`: when the BMC then shows exactly the
device just written but a clear valid bit, nothing can have used the override in between, so
the device is reported as `boot.source` (still without a mode). Without it, a BMC like
`ipmi_sim` could never confirm a boot.set; a plain read of the same BMC later reports nothing.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from typing import Any

from reconciler.model import Health
from reconciler.model.hardware import BootMode, BootSource, PowerState

DEFAULT_PORT = 623

# Boot device selector (bits 5:2 of boot flags data 2) -> Metalform's BootSource.
BOOT_SOURCES: dict[int, BootSource] = {
    0x0: BootSource.NONE,
    0x1: BootSource.PXE,
    0x2: BootSource.HDD,
    0x5: BootSource.CD,
    0x6: BootSource.BIOS_SETUP,
}
BOOT_SELECTOR_NAMES: dict[int, str] = {
    0x0: "None",
    0x1: "Pxe",
    0x2: "Hdd",
    0x3: "HddSafeMode",
    0x4: "Diagnostic",
    0x5: "Cd",
    0x6: "BiosSetup",
    0x7: "RemoteFloppy",
    0x8: "RemoteCd",
    0x9: "RemoteMedia",
    0xB: "RemoteHdd",
    0xF: "Floppy",
}
# BootSource -> the device name pyghmi's `Command.set_bootdev` takes ("default" clears it).
PYGHMI_BOOT_DEVICES: dict[BootSource, str] = {
    BootSource.NONE: "default",
    BootSource.PXE: "network",
    BootSource.HDD: "hd",
    BootSource.CD: "optical",
    BootSource.BIOS_SETUP: "setup",
}
RESTORE_POLICIES = {0: "AlwaysOff", 1: "Previous", 2: "AlwaysOn", 3: "Unknown"}
# IANA enterprise numbers of common BMC makers (the Get Device ID manufacturer field).
MANUFACTURERS: dict[int, str] = {
    2: "IBM",
    9: "Cisco",
    11: "Hewlett-Packard",
    343: "Intel",
    674: "Dell",
    4753: "MontaVista",
    10368: "Fujitsu",
    10876: "Supermicro",
    19046: "Lenovo",
    20301: "IBM",
    47196: "Hewlett Packard Enterprise",
    49871: "OpenBMC",
}
# Completion codes after which the same request may succeed later (spec table 5-2).
TEMPORARY_COMPLETION_CODES: dict[int, str] = {
    0xC0: "node busy",
    0xC3: "timeout while processing the command",
    0xCE: "command response could not be provided",
    0xD2: "BMC initialization or firmware update in progress",
}


class ChassisControl(enum.IntEnum):
    """Chassis Control request byte (data 1, bits 3:0)."""

    POWER_OFF = 0
    """Hard power off, without waiting for the operating system."""
    POWER_ON = 1
    POWER_CYCLE = 2
    HARD_RESET = 3
    DIAGNOSTIC_INTERRUPT = 4
    SOFT_OFF = 5
    """ACPI soft shutdown request: the operating system powers the host off."""


def parse_address(address: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` or a bare IPv6 address -> (host, port); ValueError."""
    text = address.strip()
    if not text:
        raise ValueError("the BMC address is empty")
    if "://" in text:
        raise ValueError(f"an IPMI BMC address is host or host:port, not a URL ({text})")
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in BMC address {text}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"unexpected text after ']' in BMC address {text}")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        ipaddress.IPv6Address(text)  # a bare IPv6 address has no port; raises if not one
    if not host:
        raise ValueError(f"no host in BMC address {text}")
    if port_text == "":
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} of BMC address {text} is not in 1..65535")
    return host, int(port_text)


def endpoint(host: str, port: int) -> str:
    """The endpoint name used for limits and messages: `ipmi:host:port`."""
    shown = f"[{host}]" if ":" in host else host
    return f"ipmi:{shown}:{port}"


@dataclass(frozen=True)
class ChassisStatus:
    """Get Chassis Status, current power state byte."""

    power_on: bool
    overload: bool = False
    interlock: bool = False
    power_fault: bool = False
    control_fault: bool = False
    restore_policy: str = "Unknown"

    @classmethod
    def parse(cls, data: bytes) -> ChassisStatus:
        if len(data) < 3:
            raise ValueError(f"Get Chassis Status answer is {len(data)} bytes, expected 3 or 4")
        b = data[0]
        return cls(
            power_on=bool(b & 0x01),
            overload=bool(b & 0x02),
            interlock=bool(b & 0x04),
            power_fault=bool(b & 0x08),
            control_fault=bool(b & 0x10),
            restore_policy=RESTORE_POLICIES[(b >> 5) & 0x03],
        )

    @property
    def power(self) -> PowerState:
        return PowerState.ON if self.power_on else PowerState.OFF

    @property
    def problems(self) -> list[str]:
        """What the BMC flags as wrong with the power subsystem."""
        flags = [
            (self.overload, "power overload"),
            (self.interlock, "interlock active"),
            (self.power_fault, "power fault"),
            (self.control_fault, "power control fault"),
        ]
        return [text for flag, text in flags if flag]


@dataclass(frozen=True)
class BootFlags:
    """Get System Boot Options, parameter 5 (boot flags)."""

    valid: bool
    persistent: bool
    uefi: bool
    selector: int
    """Boot device selector, bits 5:2 of data 2."""

    @classmethod
    def parse(cls, data: bytes) -> BootFlags:
        # data[0] parameter version, data[1] parameter selector (bit 7: parameter invalid or
        # locked), then the five bytes of the boot flags.
        if len(data) < 4:
            raise ValueError(f"boot flags answer is {len(data)} bytes, expected at least 4")
        if data[1] & 0x7F != 5:
            raise ValueError(f"boot options answer is for parameter {data[1] & 0x7F}, not 5")
        flags, device = data[2], data[3]
        return cls(
            valid=bool(flags & 0x80) and not data[1] & 0x80,
            persistent=bool(flags & 0x40),
            uefi=bool(flags & 0x20),
            selector=(device >> 2) & 0x0F,
        )

    @property
    def device_name(self) -> str:
        return BOOT_SELECTOR_NAMES.get(self.selector, f"0x{self.selector:x}")


@dataclass(frozen=True)
class DeviceId:
    """Get Device ID: who made the BMC and which firmware it runs."""

    device_id: int
    revision: int
    firmware: str
    ipmi_version: str
    manufacturer_id: int
    product_id: int

    @classmethod
    def parse(cls, data: bytes) -> DeviceId:
        if len(data) < 11:
            raise ValueError(f"Get Device ID answer is {len(data)} bytes, expected at least 11")
        return cls(
            device_id=data[0],
            revision=data[1] & 0x0F,
            # Major revision is binary, minor is two BCD digits.
            firmware=f"{data[2] & 0x7F}.{data[3] >> 4:x}{data[3] & 0x0F:x}",
            ipmi_version=f"{data[4] & 0x0F}.{data[4] >> 4}",
            manufacturer_id=int.from_bytes(data[6:9], "little") & 0x0FFFFF,
            product_id=int.from_bytes(data[9:11], "little"),
        )


def boot_state(flags: BootFlags, just_set: BootSource | None = None) -> dict[str, str]:
    """The `boot.*` paths an honest reading of the boot flags supports (module docstring).

    `just_set` is the source a `boot.set` wrote immediately before this reading, if any.
    """
    if flags.valid:
        state: dict[str, str] = {
            "boot.mode": (BootMode.CONTINUOUS if flags.persistent else BootMode.ONCE).value
        }
        source = BOOT_SOURCES.get(flags.selector)
        if source is not None:
            state["boot.source"] = source.value
        return state
    if flags.selector == 0:
        return {"boot.source": BootSource.NONE.value}
    if just_set is not None and BOOT_SOURCES.get(flags.selector) is just_set:
        return {"boot.source": just_set.value}
    return {}


def live_state(
    status: ChassisStatus, flags: BootFlags | None, just_set: BootSource | None = None
) -> dict[str, Any]:
    """Flat live state paths, in the shape of the Server spec."""
    state: dict[str, Any] = {"power": status.power.value}
    if flags is not None:
        state.update(boot_state(flags, just_set))
    return state


def live_facts(
    status: ChassisStatus, flags: BootFlags | None, device: DeviceId | None
) -> dict[str, Any]:
    """Read-only context: who made the BMC, firmware, the raw boot override, power policy."""
    facts: dict[str, Any] = {"protocol": "ipmi", "powerRestorePolicy": status.restore_policy}
    if status.problems:
        facts["powerProblems"] = status.problems
    if device is not None:
        facts.update(
            manufacturerId=device.manufacturer_id,
            productId=device.product_id,
            firmwareVersion=device.firmware,
            ipmiVersion=device.ipmi_version,
        )
        if device.manufacturer_id in MANUFACTURERS:
            facts["manufacturer"] = MANUFACTURERS[device.manufacturer_id]
    if flags is not None:
        facts["bootOverride"] = {
            "device": flags.device_name,
            "valid": flags.valid,
            "persistent": flags.persistent,
            "uefi": flags.uefi,
        }
    return facts


def health(status: ChassisStatus) -> Health:
    """Degraded when the BMC reports a power problem; otherwise healthy."""
    return Health.DEGRADED if status.problems else Health.HEALTHY


def boot_request(params: dict[str, Any]) -> tuple[BootSource, bool]:
    """`boot.set` params -> (source, persistent); ValueError names what is wrong."""
    if "source" not in params:
        raise ValueError("boot.set needs a source")
    try:
        source = BootSource(params["source"])
    except ValueError:
        allowed = ", ".join(s.value for s in BootSource)
        raise ValueError(f"boot source {params['source']!r} is not one of {allowed}") from None
    try:
        mode = BootMode(params.get("mode", BootMode.CONTINUOUS.value))
    except ValueError:
        allowed = ", ".join(m.value for m in BootMode)
        raise ValueError(f"boot mode {params['mode']!r} is not one of {allowed}") from None
    return source, mode is BootMode.CONTINUOUS


def power_request(operation: str, params: dict[str, Any]) -> tuple[ChassisControl, PowerState]:
    """A power operation -> (the chassis control to send, the power state to wait for)."""
    if operation == "power.on":
        return ChassisControl.POWER_ON, PowerState.ON
    if operation == "power.off":
        force = params.get("force", False)
        if not isinstance(force, bool):
            raise ValueError(f"power.off force must be true or false, not {force!r}")
        return (ChassisControl.POWER_OFF if force else ChassisControl.SOFT_OFF), PowerState.OFF
    if operation == "power.reset":
        return ChassisControl.HARD_RESET, PowerState.ON
    raise ValueError(f"{operation} is not a power operation")
