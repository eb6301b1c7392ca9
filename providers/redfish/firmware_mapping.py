"""Pure translations of Redfish firmware resources into the Server's live state (no I/O).

The planner (`reconciler.planners.firmware`) reads:
- `state["firmware.<key>"]`: the version in effect of each of the system's FirmwareInventory
  members, keyed by the member's `Name` when it is unique among the system's, else its `Id`;
- `facts["firmware"]`: `{key: {id, name, version, updateable, path}}`;
- `facts["firmwareTasks"]`: update tasks `{id, path, target, imageUri, state, percent, message,
  awaitingReset}`, `target` being the key of the member the task's `Payload` names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "firmware."
AWAIT_TO_ACTIVATE = "AwaitToActivate"
"""The DMTF Update registry's message of an update staged until a reset (`Update.1.0.…`)."""
TERMINAL_TASK_STATES = frozenset({"Completed", "Exception", "Killed", "Cancelled"})


@dataclass(frozen=True)
class Member:
    id: str
    name: str
    version: str
    updateable: bool
    path: str
    related: tuple[str, ...]
    """Paths of the resources (Systems) it belongs to; empty: the whole BMC."""


def _leaf(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def members_of(members: Iterable[Member], system_id: str) -> dict[str, Member]:
    """The system's members by key: those related to it, or to nothing in particular."""
    mine = [m for m in members if not m.related or any(_leaf(r) == system_id for r in m.related)]
    names = [m.name for m in mine]
    return {(m.name if names.count(m.name) == 1 else m.id): m for m in mine}


def inventory_state(members: Mapping[str, Member]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, the `firmware` fact) of the system's members."""
    state = {PREFIX + key: m.version for key, m in members.items()}
    facts = {
        key: {
            "id": m.id,
            "name": m.name,
            "version": m.version,
            "updateable": m.updateable,
            "path": m.path,
        }
        for key, m in members.items()
    }
    return state, facts


def task_facts(doc: Mapping[str, Any], members: Mapping[str, Member]) -> dict[str, Any] | None:
    """An update task of one of the system's members, or None (another request, system)."""
    payload = doc.get("Payload") or {}
    body = payload.get("JsonBody")
    try:
        request = json.loads(body) if isinstance(body, str) else (body or {})
    except ValueError:
        return None
    targets = request.get("Targets") if isinstance(request, dict) else None
    if not isinstance(targets, list) or not targets:
        return None
    by_id = {m.id: key for key, m in members.items()}
    by_path = {m.path.rstrip("/"): key for key, m in members.items()}
    target = str(targets[0]).rstrip("/")
    key = by_path.get(target) or by_id.get(_leaf(target))
    if key is None:
        return None
    messages = [m for m in doc.get("Messages") or [] if isinstance(m, dict)]
    state = str(doc.get("TaskState") or "")
    return {
        "id": doc.get("Id"),
        "path": doc.get("@odata.id"),
        "target": key,
        "imageUri": request.get("ImageURI"),
        "state": state,
        "percent": doc.get("PercentComplete"),
        "message": "; ".join(str(m.get("Message", "")) for m in messages if m.get("Message")),
        "awaitingReset": state == "Completed"
        and any(str(m.get("MessageId", "")).endswith(AWAIT_TO_ACTIVATE) for m in messages),
    }
