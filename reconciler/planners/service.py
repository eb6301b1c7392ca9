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
    ChangeKind,
    Diagnostic,
    Expectation,
    LiveResource,
    Resource,
    Severity,
    typed,
)
from reconciler.model.services import SecretEnv, ServiceSpec
from reconciler.planners.base import Draft, PlanContext, ResourcePlan, readable
from reconciler.planners.diff import Diff, creation, diff_declared, removal

DRIVER = "docker"
"""Driver key of the provider that executes every Service action."""

RESERVED_LABEL_PREFIX = "metalform."
"""Labels Metalform puts on the containers it manages; a Service may not declare them."""

ENV_PREFIX = "env."
LABEL_PREFIX = "labels."
MAPPED_PREFIXES = (ENV_PREFIX, LABEL_PREFIX)
"""Mapping fields are flat per key, so a diff names the one variable that changed."""

SECRETS_FACT = "secrets"
"""Live fact: {Credential name: keyed fingerprint of its secret now} for the Credentials a
Service's env refers to (the provider resolves them; the planner never sees a value)."""
SECRET_ERRORS_FACT = "secretErrors"
"""Live fact: {Credential name: why its secret could not be resolved}."""


def normalize_command(command: list[str] | str) -> list[str]:
    """The argv a command runs as: a string is split like a shell would (Docker does too)."""
    return shlex.split(command) if isinstance(command, str) else list(command)


def normalize_port(port: str) -> str:
    """`8080:80` and `8080:80/tcp` are the same mapping; spell the protocol out."""
    return port if "/" in port else f"{port}/tcp"


def normalize_volume(volume: str) -> str:
    """`:rw` is Docker's default mode, so `/a:/b:rw` and `/a:/b` are the same mount."""
    return volume.removesuffix(":rw")


def secret_value(credential: str, fingerprint: str | None) -> dict[str, Any]:
    """How a secret env value is compared, planned and recorded: by its fingerprint."""
    return {"credential": credential, "fingerprint": fingerprint}


def desired_config(
    service: Resource[ServiceSpec], secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The container configuration a Service declares, normalized, in the spec's camelCase.

    Only declared fields are present: an undeclared field is neither set nor compared. This
    is also what the provider creates the container from (the action's params). A secret
    env value is its Credential and that secret's fingerprint in `secrets`, never the value.
    """
    spec = service.spec
    declared = spec.model_fields_set
    config: dict[str, Any] = {"image": spec.image}
    if spec.command is not None:
        config["command"] = normalize_command(spec.command)
    if "env" in declared:
        config["env"] = {
            name: secret_value(v.credential, (secrets or {}).get(v.credential))
            if isinstance(v, SecretEnv)
            else v
            for name, v in spec.env.items()
        }
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


def desired_state(
    service: Resource[ServiceSpec], secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The declared fields of a Service as flat paths, `state` included."""
    return {**flatten(desired_config(service, secrets)), "state": service.spec.state.value}


def plan_service(
    service: Resource | None, live: LiveResource | None, ctx: PlanContext
) -> ResourcePlan:
    """Create, recreate, start, stop or delete one Service's container."""
    if service is None:
        assert live is not None, "a deletion is planned only for a discovered container"
        return _plan_delete(live)
    service = typed(service, ServiceSpec)
    result = ResourcePlan.noop(service.address, service.source)
    reserved = _reserved_labels(service, ctx)
    if reserved is not None:
        result.diagnostics.append(reserved)
        return result
    read = readable(result, service, live, ctx, "the Docker engine")
    if read is None:
        return result
    unresolved = _unresolved_secrets(service, read, ctx)
    if unresolved is not None:
        # Nothing is planned without every fingerprint: it would compare or create a guess.
        result.diagnostics.extend(unresolved)
        return result
    secrets = read.facts.get(SECRETS_FACT) or {}
    want = desired_state(service, secrets)
    config = desired_config(service, secrets)
    conflict = read.facts.get("conflict")
    if conflict or not read.exists:
        result.record(ChangeKind.CREATE, creation(want))
        if conflict:
            # Someone else's container holds the name: report it, never adopt or replace it.
            result.diagnostics.append(ctx.diagnostic(service, Severity.ERROR, str(conflict)))
        else:
            result.drafts.append(_create_draft(config, want))
        return result
    # A declared mapping is compared whole: a key the container has but Git dropped differs.
    whole = [prefix for prefix in MAPPED_PREFIXES if prefix.rstrip(".") in config]
    diff = diff_declared(want, read.state, whole=whole, ignore=ctx.ignored(service))
    if diff:
        result.record(ChangeKind.UPDATE, diff.entries)
        result.drafts.extend(_update_drafts(diff, config))
    return result


def _unresolved_secrets(
    service: Resource[ServiceSpec], live: LiveResource, ctx: PlanContext
) -> list[Diagnostic] | None:
    """None when every secret env value has a fingerprint; else the errors to add (none when
    load or the plan's credential check already names the missing Credential or secret)."""
    errors = live.facts.get(SECRET_ERRORS_FACT) or {}
    found = live.facts.get(SECRETS_FACT) or {}
    out: list[Diagnostic] = []
    complete = True
    for name, value in sorted(service.spec.env.items()):
        if not isinstance(value, SecretEnv) or value.credential in found:
            continue
        complete = False
        if f"Credential/{value.credential}" in ctx.resources and value.credential not in errors:
            message = f"env {name}: the provider did not resolve Credential/{value.credential}"
            path = ("spec", "env", name, "credential")
            out.append(ctx.diagnostic(service, Severity.ERROR, message, path=path))
    return None if complete else out


def _reserved_labels(service: Resource[ServiceSpec], ctx: PlanContext) -> Diagnostic | None:
    """Labels Metalform keeps for its own marks, if the Service declares any."""
    reserved = sorted(k for k in service.spec.labels if k.startswith(RESERVED_LABEL_PREFIX))
    if not reserved:
        return None
    message = (
        f"labels starting with {RESERVED_LABEL_PREFIX!r} are reserved for "
        f"Metalform's own marks: {', '.join(reserved)}"
    )
    return ctx.diagnostic(
        service, Severity.ERROR, message, path=("spec", "labels"), field_name="spec.labels"
    )


def _create_draft(config: dict[str, Any], want: dict[str, Any]) -> Draft:
    running = want["state"] == "Running"
    return Draft(
        key="create",
        operation="service.create",
        params={**config, "start": running},
        provider=DRIVER,
        expect=Expectation(current=want),
        description="create the container" + (" and start it" if running else ""),
    )


def _update_drafts(diff: Diff, config: dict[str, Any]) -> list[Draft]:
    """Recreate the container if its configuration changed, else start or stop it."""
    running = diff.compared["state"] == "Running"
    changed = [e.path for e in diff.entries if e.path != "state"]
    if not changed:
        return [_start_draft("start the container") if running else _stop_draft()]
    # The new container is created stopped, so a failed start is re-planned on its own.
    config_paths = {p: v for p, v in diff.compared.items() if p != "state"}
    shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
    recreate = Draft(
        key="recreate",
        operation="service.recreate",
        params=config,
        disruptive=True,
        provider=DRIVER,
        expect=Expectation(current={**config_paths, "state": "Stopped"}),
        description=f"remove and re-create the container ({shown} changed)",
    )
    if not running:
        return [recreate]
    return [recreate, _start_draft("start the new container", after=("recreate",))]


def _start_draft(description: str, after: tuple[str, ...] = ()) -> Draft:
    return Draft(
        key="start",
        operation="service.start",
        params={},
        after=after,
        provider=DRIVER,
        expect=Expectation(current={"state": "Running"}),
        description=description,
    )


def _stop_draft() -> Draft:
    return Draft(
        key="stop",
        operation="service.stop",
        params={},
        disruptive=True,
        provider=DRIVER,
        expect=Expectation(current={"state": "Stopped"}),
        description="stop the container",
    )


def _plan_delete(live: LiveResource) -> ResourcePlan:
    """A managed container whose Service Git no longer declares: remove it."""
    result = ResourcePlan.noop(live.address)
    if not live.reachable or not live.exists:
        return result
    result.record(ChangeKind.DELETE, removal(live.state))
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
