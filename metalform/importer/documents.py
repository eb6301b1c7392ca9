"""What the BMCs said -> Server and BiosTemplate documents (pure: no I/O).

BIOS is factored per model: one BiosTemplate per model holds every value all its servers
share, and each Server lists only where it differs. A template that already exists in the
repository is used as it is (import never rewrites it), so the Servers then list their
differences from it; either way the effective attributes are exactly what the BMC reports.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import MetalformError
from reconciler.model import API_VERSION
from reconciler.model.base import NAME_MAX, NAME_PATTERN

PLACEHOLDERS = ("hostname", "serial", "model", "address")
BIOS_PREFIX = "bios.attributes."


@dataclass
class Found:
    """One System that answered, with what its BMC reported."""

    driver: str
    """`redfish` or `ipmi`."""
    address: str
    """The IP address probed."""
    bmc_address: str
    """`bmc.address` as written: the Redfish base URL, or IPMI `host:port`."""
    system_id: str | None
    hostname: str | None
    serial: str | None
    manufacturer: str | None
    model: str | None
    power: str | None
    bios: dict[str, Any] = field(default_factory=dict)
    """Attributes in effect after the next boot (staged values win), writable ones only."""


class PatternError(MetalformError):
    """--name uses a placeholder import does not know."""


def check_pattern(pattern: str) -> None:
    """Fail before probing anything when --name cannot be filled in."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as exc:
        raise PatternError(f"--name {pattern!r}: {exc}") from None
    if not pattern.strip():
        raise PatternError("--name is empty")
    unknown = sorted({f for f in fields if f not in PLACEHOLDERS})
    if unknown:
        raise PatternError(
            f"--name {pattern!r}: unknown placeholder {{{unknown[0]}}} "
            f"(known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
        )


def slug(text: str) -> str:
    """`text` as a resource name: lowercase letters, digits, '.' and '-', at most 63 long."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip(".-")
    name = re.sub(r"[.-]*-[.-]*", "-", name)[:NAME_MAX].rstrip(".-")
    return name if NAME_PATTERN.fullmatch(name or "-") else "unnamed"


def server_name(pattern: str, found: Found) -> str:
    """The Server's name from --name; a missing host name falls back to the system id."""
    values = {
        "hostname": (found.hostname or "").split(".", 1)[0] or found.system_id or found.address,
        "serial": found.serial or found.system_id or found.address,
        "model": found.model or "unknown",
        "address": found.address,
    }
    return slug(pattern.format(**values))


def template_name(found: Found) -> str:
    return slug(f"{found.manufacturer or ''} {found.model or 'unknown-model'}")


def model_of(found: Found) -> str:
    return " ".join(p for p in (found.manufacturer, found.model) if p) or "unknown model"


def shared_attributes(servers: Sequence[Found]) -> dict[str, Any]:
    """The attributes every server has, with the same value (the model's template)."""
    if not servers:
        return {}
    shared = dict(servers[0].bios)
    for found in servers[1:]:
        shared = {k: v for k, v in shared.items() if k in found.bios and found.bios[k] == v}
    return dict(sorted(shared.items()))


def document(
    kind: str, name: str, spec: dict[str, Any], labels: Mapping[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


def template_document(
    name: str, servers: Sequence[Found], labels: Mapping[str, str]
) -> dict[str, Any]:
    first = servers[0]
    match = {k: v for k, v in (("manufacturer", first.manufacturer), ("model", first.model)) if v}
    spec: dict[str, Any] = {}
    if match:
        spec["match"] = match
    spec["attributes"] = shared_attributes(servers)
    return document("BiosTemplate", name, spec, labels)


def server_document(
    name: str,
    found: Found,
    *,
    credential: str,
    insecure: bool,
    labels: Mapping[str, str],
    template: str | None,
    template_attributes: Mapping[str, Any],
) -> dict[str, Any]:
    """A Server: its BMC connection, its power and its BIOS differences from `template`."""
    bmc: dict[str, Any] = {"driver": found.driver, "address": found.bmc_address}
    if found.system_id is not None:
        bmc["systemId"] = found.system_id
    bmc["credential"] = credential
    if insecure:
        bmc["verifyTls"] = False
    spec: dict[str, Any] = {"bmc": bmc}
    if found.hostname:
        spec["hostname"] = found.hostname
    if found.power is not None:
        spec["power"] = found.power
    if template is not None:
        own = {
            k: v
            for k, v in sorted(found.bios.items())
            if k not in template_attributes or template_attributes[k] != v
        }
        spec["bios"] = {"template": template, **({"attributes": own} if own else {})}
    return document("Server", name, spec, labels)
