"""Docker containers <-> Metalform: the labels that mark them, create arguments, live state.

Live state comes from the container listing alone (one request per engine). The listing
carries the image, state and network mode, but not the environment, the exact argv, the
restart policy or ports a `none`/`host` network does not publish, and it merges the image's
own labels into the container's. So Metalform records the configuration it created a container
with in the `metalform.spec` label: a container's configuration is fixed at creation (changing
it means re-creating it), so that record is the container's configuration.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.model import API_VERSION, Address, Health, LiveResource, address_of
from reconciler.planners.service import flatten

MANAGED_KEY = "metalform.managed"
MANAGED_LABEL = f"{MANAGED_KEY}=true"
"""The mark of a container Metalform manages; it never touches a container without it."""
RESOURCE_KEY = "metalform.resource"
"""`Service/<name>`: which resource a managed container is."""
SPEC_KEY = "metalform.spec"
"""The JSON configuration the container was created with (see the module docstring)."""

RECORDED_FIELDS = ("command", "env", "ports", "volumes", "restartPolicy", "labels")
"""Fields whose live value is the recorded one; image, state and network mode are observed."""

_EXIT_CODE = re.compile(r"^Exited \((-?\d+)\)")
_RUNNING_STATES = frozenset({"running", "restarting", "paused"})


def container_labels(address: Address, config: Mapping[str, Any]) -> dict[str, str]:
    """The labels a new container gets: the declared ones plus Metalform's marks."""
    recorded = {k: config[k] for k in RECORDED_FIELDS if k in config}
    return {
        **dict(config.get("labels", {})),
        MANAGED_KEY: "true",
        RESOURCE_KEY: address,
        SPEC_KEY: json.dumps(recorded, sort_keys=True, separators=(",", ":")),
    }


def port_bindings(ports: list[str]) -> dict[str, int | None]:
    """`["8080:80/tcp", "53/udp"]` -> `{"80/tcp": 8080, "53/udp": None}` (None: any port)."""
    bindings: dict[str, int | None] = {}
    for port in ports:
        mapping, _, protocol = port.partition("/")
        host, _, container = mapping.rpartition(":")
        bindings[f"{container}/{protocol or 'tcp'}"] = int(host) if host else None
    return bindings


def restart_policy(name: str) -> dict[str, Any]:
    return {"Name": name, "MaximumRetryCount": 0} if name == "on-failure" else {"Name": name}


def create_arguments(
    address: Address,
    name: str,
    config: Mapping[str, Any],
    environment: Callable[[Mapping[str, Any]], dict[str, str]],
) -> dict[str, Any]:
    """Keyword arguments of the low-level `create_container` (without `host_config`) and of
    `create_host_config`, as two dicts under `container` and `host`. `environment` resolves
    the env (secret references to their values); the labels record it unresolved."""
    ports = list(config.get("ports", []))
    bindings = port_bindings(ports)
    container: dict[str, Any] = {
        "image": config["image"],
        "name": name,
        "labels": container_labels(address, config),
        "detach": True,
    }
    host: dict[str, Any] = {}
    if "command" in config:
        container["command"] = list(config["command"])
    if "env" in config:
        container["environment"] = environment(config["env"])
    if bindings:
        container["ports"] = [(int(k.split("/")[0]), k.split("/")[1]) for k in bindings]
        host["port_bindings"] = {k: v for k, v in bindings.items()}
    if config.get("volumes"):
        host["binds"] = list(config["volumes"])
    if "restartPolicy" in config:
        host["restart_policy"] = restart_policy(config["restartPolicy"])
    if "networkMode" in config:
        host["network_mode"] = config["networkMode"]
    return {"container": container, "host": host}


def container_name(summary: Mapping[str, Any]) -> str:
    """The container's name (the listing spells names with a leading slash)."""
    names = summary.get("Names") or ["/"]
    return str(names[0]).lstrip("/")


def is_managed(summary: Mapping[str, Any]) -> bool:
    return (summary.get("Labels") or {}).get(MANAGED_KEY) == "true"


def resource_of(summary: Mapping[str, Any]) -> Address | None:
    value = (summary.get("Labels") or {}).get(RESOURCE_KEY)
    return str(value) if value else None


def exit_code(summary: Mapping[str, Any]) -> int | None:
    match = _EXIT_CODE.match(str(summary.get("Status", "")))
    return int(match.group(1)) if match else None


def health(summary: Mapping[str, Any]) -> Health:
    """Running (and not failing its health check) or stopped cleanly: Healthy."""
    state = str(summary.get("State", ""))
    status = str(summary.get("Status", ""))
    if "(unhealthy)" in status or state in ("dead", "paused"):
        return Health.DEGRADED
    if state == "restarting" or "(health: starting)" in status:
        return Health.PROGRESSING
    code = exit_code(summary)
    if state == "exited" and code not in (None, 0):
        return Health.DEGRADED
    return Health.HEALTHY


def live_state(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A container's state as the flat paths the Service planner compares."""
    state: dict[str, Any] = {
        "image": summary.get("Image"),
        "state": "Running" if summary.get("State") in _RUNNING_STATES else "Stopped",
    }
    network = (summary.get("HostConfig") or {}).get("NetworkMode")
    if network:
        state["networkMode"] = network
    try:
        recorded = json.loads((summary.get("Labels") or {}).get(SPEC_KEY, "{}"))
    except ValueError:
        recorded = {}
    if isinstance(recorded, dict):
        state.update(flatten({k: v for k, v in recorded.items() if k in RECORDED_FIELDS}))
    return state


def live_resource(
    address: Address, summary: Mapping[str, Any], *, engine: str, provider: str | None = None
) -> LiveResource:
    """One managed container as a LiveResource; `provider` adds the document apply needs to
    delete it (a discovered container whose Service Git no longer declares)."""
    facts: dict[str, Any] = {
        "containerId": str(summary.get("Id", ""))[:12],
        "status": summary.get("Status"),
        "engine": engine,
    }
    code = exit_code(summary)
    if code is not None:
        facts["exitCode"] = code
    if provider is not None:
        facts["document"] = {
            "apiVersion": API_VERSION,
            "kind": "Service",
            "metadata": {"name": address.split("/", 1)[1]},
            "spec": {"provider": provider, "image": str(summary.get("Image") or "unknown")},
        }
    return LiveResource(
        address=address, state=live_state(summary), facts=facts, health=health(summary)
    )


def absent(address: Address, *, engine: str, conflict: str | None = None) -> LiveResource:
    """No managed container for this Service (maybe someone else's holds its name)."""
    facts: dict[str, Any] = {"engine": engine}
    if conflict:
        facts["conflict"] = conflict
    return LiveResource(address=address, exists=False, facts=facts, health=Health.UNKNOWN)


def service_address(name: str) -> Address:
    return address_of("Service", name)
