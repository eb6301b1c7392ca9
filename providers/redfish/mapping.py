"""Pure translations between Redfish values and Metalform's Server model (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.model import Health
from reconciler.model.hardware import BootMode, BootSource, PowerState

BIOS_PREFIX = "bios.attributes."
POWER = "power"
BOOT_SOURCE = "boot.source"
BOOT_MODE = "boot.mode"

_POWER = {
    "On": (PowerState.ON, False),
    "Off": (PowerState.OFF, False),
    # Transitional states report where the machine is heading, so a system that is booting
    # is not planned for another power-on; its health says it is still moving.
    "PoweringOn": (PowerState.ON, True),
    "PoweringOff": (PowerState.OFF, True),
    "Paused": (PowerState.ON, False),
}

_HEALTH = {"OK": Health.HEALTHY, "Warning": Health.DEGRADED, "Critical": Health.DEGRADED}


def power_state(value: str | None) -> tuple[str | None, bool]:
    """Redfish `PowerState` -> (`On`|`Off`|None when unknown, whether it is in transition)."""
    if value is None or value not in _POWER:
        return None, False
    state, moving = _POWER[value]
    return state.value, moving


def health(status_health: str | None, transitional: bool) -> Health:
    """The resource health from the System's `Status.Health` and its power transition."""
    if transitional:
        return Health.PROGRESSING
    return _HEALTH.get(status_health or "OK", Health.HEALTHY)


def boot_state(target: str | None, enabled: str | None) -> dict[str, str]:
    """Redfish boot override -> `boot.source` / `boot.mode` paths.

    A disabled override boots the normal device, which the model calls source `None`
    (mode `Continuous`, the model's default). Targets the model has no name for (`Usb`,
    `UefiHttp`, ...) are kept verbatim so they show as a difference rather than vanish.
    """
    if enabled == "Disabled" or target is None:
        return {BOOT_SOURCE: BootSource.NONE.value, BOOT_MODE: BootMode.CONTINUOUS.value}
    mode = BootMode.ONCE if enabled == "Once" else BootMode.CONTINUOUS
    return {BOOT_SOURCE: target, BOOT_MODE: mode.value}


def boot_request(source: str, mode: str = BootMode.CONTINUOUS.value) -> tuple[str, str]:
    """Model `boot.source`/`boot.mode` -> Redfish (`BootSourceOverrideTarget`, `...Enabled`)."""
    source = BootSource(source).value
    mode = BootMode(mode).value
    if source == BootSource.NONE.value:
        return BootSource.NONE.value, "Disabled"
    return source, mode


def bios_state(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """BIOS attributes in effect -> `bios.attributes.<Name>` paths."""
    return {BIOS_PREFIX + name: value for name, value in (attributes or {}).items()}


def bios_pending(
    current: Mapping[str, Any] | None, pending: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Staged BIOS values that differ from the current ones, as `bios.attributes.<Name>`.

    Some BMCs list every attribute in the pending Settings object (most of them unchanged);
    only a value that differs from the one in effect is a pending change.
    """
    current = current or {}
    return {
        BIOS_PREFIX + name: value
        for name, value in (pending or {}).items()
        if name not in current or current[name] != value
    }


def bios_patch(params: Mapping[str, Any]) -> dict[str, Any]:
    """The `Attributes` of a `bios.set` PATCH from the action's params."""
    attributes = params.get("attributes")
    if not isinstance(attributes, Mapping):
        raise ValueError("bios.set needs params.attributes, an object of Name: value")
    return {str(name): value for name, value in attributes.items()}


def registry_facts(entries: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """AttributeRegistry `RegistryEntries.Attributes` -> {Name: {type, readOnly, ...}}."""
    facts: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name = entry.get("AttributeName")
        if not name:
            continue
        kind = entry.get("Type")
        values = entry.get("Value") if kind == "Enumeration" else None
        facts[name] = {
            "type": kind,
            "readOnly": bool(entry.get("ReadOnly") or entry.get("Immutable")),
            "allowedValues": (
                [v.get("ValueName") for v in values if isinstance(v, Mapping)]
                if isinstance(values, list)
                else None
            ),
            "lowerBound": entry.get("LowerBound"),
            "upperBound": entry.get("UpperBound"),
        }
    return facts


def reset_type(wanted: str, allowed: Iterable[str] | None) -> str:
    """The ResetType to send: `wanted`, or its forceful sibling when the BMC lacks it."""
    allowed_set = set(allowed or ())
    if not allowed_set or wanted in allowed_set:
        return wanted
    fallback = {"GracefulShutdown": "ForceOff", "GracefulRestart": "ForceRestart", "On": "ForceOn"}
    return fallback.get(wanted, wanted)
