"""Containers Metalform did not create: their configuration read back, and their adoption.

A container's configuration is fixed at creation and Docker labels cannot be added later, so
adoption cannot mark the container. It is declared in Git instead: a Service with
`adopt: true` (what `metalform import docker` writes) claims the unmarked container of its
name. Its live state is then read from `docker inspect` (what the container really runs, less
what its image sets by itself), compared like a managed container's, and kept as it is while it
matches; any difference re-creates it as a managed container. An adopted container that was
never re-created stays unmarked, so it is never discovered and never deleted when Git drops
its Service.

Environment values are secrets until shown otherwise: a value whose Service declares it as a
`{credential: ...}` reference, or that looks like a secret (`looks_secret`), is replaced by its
keyed fingerprint before it leaves this module.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from reconciler.model import Address, Health, LiveResource
from reconciler.planners.service import (
    flatten,
    normalize_port,
    normalize_volume,
    secret_value,
)
from reconciler.secrets import REDACTOR, Secret, fingerprint

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY|CREDENTIAL|PASS", re.IGNORECASE)
LONG_VALUE = 20
HIGH_ENTROPY = 3.5
"""Bits per character above which a long value is taken for a key (hex digests have 4,
base64 tokens 5 to 6; words, paths and host names stay well below 3.5)."""
_URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]*:[^/@\s]+@")
DEFAULT_NETWORKS = frozenset({"default", "bridge"})


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def looks_secret(name: str, value: str) -> bool:
    """Whether an environment variable must be treated as a secret (never written or shown)."""
    if SECRET_NAME.search(name) or _URL_WITH_PASSWORD.search(value):
        return True
    return len(value) >= LONG_VALUE and " " not in value and _entropy(value) >= HIGH_ENTROPY


def _env(values: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        name, _, value = item.partition("=")
        out[name] = value
    return out


def _ports(bindings: Mapping[str, Any] | None) -> list[str]:
    ports: list[str] = []
    for container_port, hosts in (bindings or {}).items():
        host = next((h.get("HostPort") for h in hosts or [] if h.get("HostPort")), "")
        ports.append(normalize_port(f"{host}:{container_port}" if host else container_port))
    return sorted(ports)


def inspected_config(
    container: Mapping[str, Any], image: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a container runs, from `docker inspect`, as the Service planner's configuration
    (camelCase keys, normalized); what its image sets by itself is left out: env values and
    labels equal to the image's, and a command that is the image's default."""
    config = container.get("Config") or {}
    host = container.get("HostConfig") or {}
    own = (image or {}).get("Config") or {}
    image_env, image_labels = _env(own.get("Env")), own.get("Labels") or {}
    out: dict[str, Any] = {"image": config.get("Image")}
    command = config.get("Cmd")
    if command and command != own.get("Cmd"):
        out["command"] = list(command)
    out["env"] = {k: v for k, v in _env(config.get("Env")).items() if image_env.get(k) != v}
    out["ports"] = _ports(host.get("PortBindings"))
    out["volumes"] = sorted(normalize_volume(v) for v in host.get("Binds") or [])
    out["restartPolicy"] = (host.get("RestartPolicy") or {}).get("Name") or "no"
    labels = config.get("Labels") or {}
    out["labels"] = {k: v for k, v in labels.items() if image_labels.get(k) != v}
    network = host.get("NetworkMode")
    if network and network not in DEFAULT_NETWORKS:
        out["networkMode"] = network
    return out


def running(container: Mapping[str, Any]) -> bool:
    return bool((container.get("State") or {}).get("Running"))


def adopted_live(
    address: Address,
    container: Mapping[str, Any],
    image: Mapping[str, Any] | None,
    *,
    secret_env: Mapping[str, str],
    key: bytes,
    facts: Mapping[str, Any],
) -> LiveResource:
    """An unmarked container a Service adopts, as its LiveResource. `secret_env` is
    {variable: Credential name} of the Service's secret env values: those, and every value
    that looks like a secret, are shown by fingerprint only."""
    config = inspected_config(container, image)
    env: dict[str, Any] = {}
    for name, value in config["env"].items():
        if name in secret_env or looks_secret(name, value):
            REDACTOR.add(value)  # whatever prints it later prints a mask
        if name in secret_env:
            env[name] = secret_value(secret_env[name], fingerprint(Secret(value), key))
        elif looks_secret(name, value):
            env[name] = {"fingerprint": fingerprint(Secret(value), key)}
        else:
            env[name] = value
    config["env"] = env
    state = {**flatten(config), "state": "Running" if running(container) else "Stopped"}
    return LiveResource(
        address=address,
        state=state,
        facts={
            **facts,
            "containerId": str(container.get("Id", ""))[:12],
            "adopted": True,
        },
        health=Health.HEALTHY if running(container) else Health.UNKNOWN,
    )
