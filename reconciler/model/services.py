"""Service: a container Metalform runs on a Docker engine."""

from __future__ import annotations

import enum
import re
from typing import Annotated

from pydantic import AfterValidator, Field

from reconciler.model.base import SpecModel
from reconciler.model.checks import ManagedSpec
from reconciler.model.registry import Kind, Ref

PORT = re.compile(r"(?:([0-9]{1,5}):)?([0-9]{1,5})(?:/(?:tcp|udp))?")
VOLUME = re.compile(r"[^:\n]+:/[^:\n]*(:(ro|rw))?")
"""Both are matched with `fullmatch` (`$` would accept a trailing newline)."""
MAX_PORT = 65535


def _port(port: str) -> str:
    match = PORT.fullmatch(port)
    if not match:
        raise ValueError(f"port {port[:40]!r} is not HOST:CONTAINER[/tcp|udp]")
    if not all(1 <= int(n) <= MAX_PORT for n in match.groups() if n is not None):
        raise ValueError(f"port {port!r}: port numbers are 1 to {MAX_PORT}")
    return port


def _volume(volume: str) -> str:
    if not VOLUME.fullmatch(volume):
        raise ValueError(f"volume {volume[:80]!r} is not SOURCE:/PATH[:ro|rw]")
    return volume


# Validated one by one, so that an error names the item (`ports[1]`) and its line.
Port = Annotated[str, AfterValidator(_port)]
Volume = Annotated[str, AfterValidator(_volume)]


class ServiceState(str, enum.Enum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class RestartPolicy(str, enum.Enum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


class SecretEnv(SpecModel):
    """An environment value that is a secret: the secret of a Credential (its password, or
    its token), resolved by the provider when it creates the container. Plans, logs and the
    container's `metalform.spec` label carry only its keyed fingerprint."""

    credential: Annotated[str, Ref("Credential")] = Field(description="Name of a Credential")


class ServiceSpec(ManagedSpec):
    provider: Annotated[str, Ref("Provider", "docker")] = Field(
        description="Name of a Provider of type docker"
    )
    image: str
    state: ServiceState = ServiceState.RUNNING
    command: list[str] | str | None = None
    env: dict[str, str | SecretEnv] = Field(
        default_factory=dict,
        description="NAME: value, or NAME: {credential: CRED} for a secret (never in Git)",
    )
    ports: list[Port] = Field(default_factory=list, description='"8080:80/tcp"')
    volumes: list[Volume] = Field(default_factory=list, description='"/data:/var/lib/x:ro"')
    restart_policy: RestartPolicy = RestartPolicy.NO
    labels: dict[str, str] = Field(default_factory=dict)
    network_mode: str | None = Field(default=None, description="host, none, bridge, ...")
    adopt: bool = Field(
        default=False,
        description="Take over a container of this name that Metalform did not create, as it "
        "is, while its configuration matches (`metalform import docker` sets it)",
    )


SERVICE = Kind(
    "Service",
    ServiceSpec,
    planner="reconciler.planners.service:plan_service",
    phases={"service": 50},
    live_from="provider",
)
