"""BIOS settings: effective attributes from template chains, and checks against a registry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model import Address, Resource, address_of, typed
from reconciler.model.hardware import BiosTemplateSpec, ServerSpec

ATTRIBUTE_PREFIX = "bios.attributes."


@dataclass(frozen=True)
class EffectiveAttribute:
    value: Any
    declared_by: Address
    """The resource whose YAML sets this value (a BiosTemplate or the Server itself)."""


def template_chain(
    name: str, resources: Mapping[Address, Resource]
) -> list[Resource[BiosTemplateSpec]]:
    """The templates from the root of the `extends` chain down to `name` (load rejects cycles)."""
    chain: list[Resource[BiosTemplateSpec]] = []
    current: str | None = name
    while current is not None:
        template = typed(resources[address_of("BiosTemplate", current)], BiosTemplateSpec)
        chain.append(template)
        current = template.spec.extends
    chain.reverse()
    return chain


def effective_attributes(
    server: Resource[ServerSpec], resources: Mapping[Address, Resource]
) -> dict[str, EffectiveAttribute]:
    """Template chain first, then the Server's own overrides."""
    bios = server.spec.bios
    if bios is None:
        return {}
    result: dict[str, EffectiveAttribute] = {}
    if bios.template is not None:
        for template in template_chain(bios.template, resources):
            for key, value in template.spec.attributes.items():
                result[key] = EffectiveAttribute(value, template.address)
    for key, value in bios.attributes.items():
        result[key] = EffectiveAttribute(value, server.address)
    return result


def check_against_registry(name: str, value: Any, registry: Mapping[str, Any]) -> str | None:
    """Why `value` is not acceptable for attribute `name` per the BMC's registry, or None."""
    entry = registry.get(name)
    if entry is None:
        return "unknown BIOS attribute (not in the BMC's attribute registry)"
    if entry.get("readOnly"):
        return "read-only BIOS attribute"
    kind = entry.get("type")
    if kind == "Enumeration":
        allowed = entry.get("allowedValues") or []
        if allowed and value not in allowed:
            return f"value {value!r} not allowed (allowed: {', '.join(map(str, allowed))})"
    elif kind == "Integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"value {value!r} is not an integer"
        low, high = entry.get("lowerBound"), entry.get("upperBound")
        if (low is not None and value < low) or (high is not None and value > high):
            return f"value {value} out of bounds [{low}, {high}]"
    elif kind == "Boolean" and not isinstance(value, bool):
        return f"value {value!r} is not a boolean"
    elif kind == "String" and not isinstance(value, str):
        return f"value {value!r} is not a string"
    return None
