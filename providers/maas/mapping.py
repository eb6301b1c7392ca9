"""MAAS machine documents -> Metalform's flat live state (`provisioning.*` paths).

The Server's BMC provider owns the other paths of the same LiveResource; gather merges them,
so every path and fact here carries the `provisioning.` prefix.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from reconciler.model import Health

STATE = "provisioning.state"
DISTRO = "provisioning.distroSeries"
TAGS = "provisioning.tags"
USER_DATA_HASH = "provisioning.userDataHash"
SYSTEM_ID = "provisioning.systemId"
STATUS_MESSAGE = "provisioning.statusMessage"
MISSING = "provisioning.missing"

DESCRIPTION_MARK = "metalform:userData="
"""MAAS does not give user data back; the provider records its digest in the description."""

# Machines in these states carry an OS image (and so a distro series and user data).
_WITH_IMAGE = {"Deployed", "Deploying", "FailedDeployment"}
_MOVING = {"Commissioning", "Deploying", "Releasing", "DiskErasing", "Testing"}


def state_name(status_name: str) -> str:
    """MAAS's display name as one word: `Failed deployment` -> `FailedDeployment`."""
    return "".join(word[:1].upper() + word[1:] for word in status_name.split())


def user_data_hash(text: str) -> str:
    """The digest Metalform compares user data by."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def description_with_hash(description: str, digest: str | None) -> str:
    """The machine description with Metalform's user-data mark replaced (or removed)."""
    kept = [line for line in description.splitlines() if not line.startswith(DESCRIPTION_MARK)]
    if digest:
        kept.append(DESCRIPTION_MARK + digest)
    return "\n".join(kept)


def machine_state(machine: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Health]:
    """State, facts and health of one machine document."""
    name = state_name(str(machine.get("status_name", "")))
    state: dict[str, Any] = {STATE: name, TAGS: sorted(machine.get("tag_names") or [])}
    if name in _WITH_IMAGE:
        state[DISTRO] = machine.get("distro_series") or None
        digest = None
        for line in str(machine.get("description") or "").splitlines():
            if line.startswith(DESCRIPTION_MARK):
                digest = line[len(DESCRIPTION_MARK) :]
        state[USER_DATA_HASH] = digest
    facts = {
        SYSTEM_ID: machine.get("system_id"),
        STATUS_MESSAGE: machine.get("status_message") or "",
    }
    if name.startswith("Failed") or name == "Broken":
        health = Health.DEGRADED
    elif name in _MOVING:
        health = Health.PROGRESSING
    else:
        health = Health.HEALTHY
    return state, facts, health
