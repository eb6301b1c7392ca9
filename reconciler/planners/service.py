"""Planning one Service: a container on a Docker engine, from its desired and live flat state.

Pure: the desired Service (None when Git dropped it) and its live state in, a change, action
drafts and diagnostics out. A container's configuration cannot change in place, so any
difference other than `state` is a `service.recreate`; `state` alone is a start or a stop.
Read-backs need no settle time: Docker reports a container running once its start returns, so
one that exits at once fails its action, which is the truth about it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from reconciler.model import (
    Address,
    Change,
    ChangeKind,
    Diagnostic,
    DiffEntry,
    Expectation,
    LiveResource,
    Resource,
    Severity,
)
from reconciler.planners.server import Draft, PlanContext, ResourcePlan

DRIVER = "docker"
"""Driver key of the provider that executes every Service action."""

RESERVED_LABEL_PREFIX = "metalform."
"""Labels Metalform puts on the containers it manages; a Service may not declare them."""

ENV_PREFIX = "env."
LABEL_PREFIX = "labels."
MAPPED_PREFIXES = (ENV_PREFIX, LABEL_PREFIX)
"""Mapping fields are flat per key, so a diff names the one variable that changed."""


def normalize_command(command: list[str] | str) -> list[str]:
    """The argv a command runs as: a string is split like a shell would (Docker does too)."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def normalize_port(port: str) -> str:
    """`8080:80` and `8080:80/tcp` are the same mapping; spell the protocol out."""
    return port if "/" in port else f"{port}/tcp"


def normalize_volume(volume: str) -> str:
    """`:rw` is Docker's default mode, so `/a:/b:rw` and `/a:/b` are the same mount."""
    return volume.removesuffix(":rw")


def desired_config(service: Resource) -> dict[str, Any]:
    """The container configuration a Service declares, normalized, in the spec's camelCase.

    Only declared fields are present: an undeclared field is neither set nor compared. This
    is also what the provider creates the container from (the action's params).
    """
    spec = service.spec
    declared = spec.model_fields_set
    config: dict[str, Any] = {"image": spec.image}
    if spec.command is not None:
        config["command"] = normalize_command(spec.command)
    if "env" in declared:
        config["env"] = dict(spec.env)
    if "ports" in declared:
        config["ports"] = sorted(normalize_port(p) for p in spec.ports)
    if "volumes" in declared:
        config["volumes"] = sorted(normalize_volume(v) for v in spec.volumes)
    if "restart_policy" in declared:
        config["restartPolicy"] = spec.restart_policy.value
    if "labels" in declared:
        config["labels"] = dict(spec.labels)
    if spec.network_mode is not None:
        config["networkMode"] = spec.network_mode
    return config


def flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as flat paths: `env.NAME`, `labels.KEY`, other fields as they are."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in ("env", "labels"):
            for name, item in value.items():
                flat[f"{key}.{name}"] = item
        else:
            flat[key] = value
    return flat


def desired_state(service: Resource) -> dict[str, Any]:
    """The declared fields of a Service as flat paths, `state` included."""
    return {**flatten(desired_config(service)), "state": service.spec.state.value}


def plan_service(
    service: Resource | None, live: LiveResource | None, ctx: PlanContext
) -> ResourcePlan:
    """Create, recreate, start, stop or delete one Service's container."""
    if service is None:
        assert live is not None, "a deletion is planned only for a discovered container"
        return _plan_delete(live)
    address = service.address
    result = ResourcePlan(
        address, Change(address=address, action=ChangeKind.NOOP, source=service.source)
    )

    def diag(
        severity: Severity,
        message: str,
        field_name: str | None = None,
        path: tuple[str | int, ...] = (),
    ) -> None:
        location = ctx.locate(address, path) if path else None
        result.diagnostics.append(
            Diagnostic(
                severity=severity,
                message=message,
                address=address,
                field=field_name,
                location=location or service.location,
            )
        )

    reserved = sorted(k for k in service.spec.labels if k.startswith(RESERVED_LABEL_PREFIX))
    if reserved:
        diag(
            Severity.ERROR,
            f"labels starting with {RESERVED_LABEL_PREFIX!r} are reserved for "
            f"Metalform's own marks: {', '.join(reserved)}",
            "spec.labels",
            ("spec", "labels"),
        )
        return result

    if live is None or not live.reachable:
        why = live.error if live is not None and live.error else "no provider answered"
        diag(Severity.WARNING, f"cannot read the Docker engine, nothing planned for it: {why}")
        result.reachable = False
        return result

    want = desired_state(service)
    config = desired_config(service)
    running = want["state"] == "Running"

    conflict = live.facts.get("conflict")
    if conflict:
        # Someone else's container holds the name: report it, never adopt or replace it.
        result.change = result.change.model_copy(
            update={
                "action": ChangeKind.CREATE,
                "diff": [DiffEntry(path=p, after=v) for p, v in want.items()],
            }
        )
        diag(Severity.ERROR, str(conflict))
        return result

    if not live.exists:
        result.change = result.change.model_copy(
            update={
                "action": ChangeKind.CREATE,
                "diff": [DiffEntry(path=p, after=v) for p, v in want.items()],
            }
        )
        result.drafts.append(
            Draft(
                key="create",
                operation="service.create",
                params={**config, "start": running},
                provider=DRIVER,
                expect=Expectation(current=want),
                description="create the container" + (" and start it" if running else ""),
            )
        )
        return result

    # A declared mapping is compared whole: a key the container has but Git dropped differs.
    for prefix in MAPPED_PREFIXES:
        if prefix.rstrip(".") in config:
            for path in live.state:
                if path.startswith(prefix) and path not in want:
                    want[path] = None

    diff = [
        DiffEntry(path=p, before=live.state.get(p), after=v)
        for p, v in want.items()
        if live.state.get(p) != v
    ]
    if not diff:
        return result
    result.change = result.change.model_copy(update={"action": ChangeKind.UPDATE, "diff": diff})

    changed = [d.path for d in diff if d.path != "state"]
    if changed:
        # The new container is created stopped, so a failed start is re-planned on its own.
        config_paths = {p: v for p, v in want.items() if p != "state"}
        result.drafts.append(
            Draft(
                key="recreate",
                operation="service.recreate",
                params=config,
                disruptive=True,
                provider=DRIVER,
                expect=Expectation(current={**config_paths, "state": "Stopped"}),
                description=f"remove and re-create the container ({', '.join(changed[:3])}"
                f"{', ...' if len(changed) > 3 else ''} changed)",
            )
        )
        if running:
            result.drafts.append(
                Draft(
                    key="start",
                    operation="service.start",
                    params={},
                    after=("recreate",),
                    provider=DRIVER,
                    expect=Expectation(current={"state": "Running"}),
                    description="start the new container",
                )
            )
    elif running:
        result.drafts.append(
            Draft(
                key="start",
                operation="service.start",
                params={},
                provider=DRIVER,
                expect=Expectation(current={"state": "Running"}),
                description="start the container",
            )
        )
    else:
        result.drafts.append(
            Draft(
                key="stop",
                operation="service.stop",
                params={},
                disruptive=True,
                provider=DRIVER,
                expect=Expectation(current={"state": "Stopped"}),
                description="stop the container",
            )
        )
    return result


def _plan_delete(live: LiveResource) -> ResourcePlan:
    """A managed container whose Service Git no longer declares: remove it."""
    address: Address = live.address
    result = ResourcePlan(address, Change(address=address, action=ChangeKind.NOOP))
    if not live.reachable or not live.exists:
        return result
    result.change = Change(
        address=address,
        action=ChangeKind.DELETE,
        diff=[DiffEntry(path=p, before=v) for p, v in sorted(live.state.items())],
    )
    params: dict[str, Any] = {}
    engine = live.facts.get("engine")
    if isinstance(engine, str):
        # The plan may carry no Provider resource for a deleted Service: name the engine.
        params["engine"] = engine
    result.drafts.append(
        Draft(
            key="delete",
            operation="service.delete",
            params=params,
            disruptive=True,
            provider=DRIVER,
            # An absent container has no state at all: that is what the read-back must show.
            expect=Expectation(current={"state": None}),
            description="remove the container (no longer declared in Git)",
        )
    )
    return result
