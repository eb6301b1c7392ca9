"""Service: a container Metalform runs on a Docker engine."""

from __future__ import annotations

import enum
import re
from typing import Annotated

from pydantic import Field, field_validator

from reconciler.model.base import SpecModel
from reconciler.model.registry import Kind, Ref

PORT = re.compile(r"^(\d{1,5}:)?\d{1,5}(/(tcp|udp))?$")
VOLUME = re.compile(r"^[^:]+:/[^:]*(:(ro|rw))?$")


class ServiceState(str, enum.Enum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class RestartPolicy(str, enum.Enum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


class ServiceSpec(SpecModel):
    provider: Annotated[str, Ref("Provider", "docker")] = Field(
        description="Name of a Provider of type docker"
    )
    image: str
    state: ServiceState = ServiceState.RUNNING
    command: list[str] | str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ports: list[str] = Field(default_factory=list, description='"8080:80/tcp"')
    volumes: list[str] = Field(default_factory=list, description='"/data:/var/lib/x:ro"')
    restart_policy: RestartPolicy = RestartPolicy.NO
    labels: dict[str, str] = Field(default_factory=dict)
    network_mode: str | None = Field(default=None, description="host, none, bridge, ...")

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[str]) -> list[str]:
        for port in ports:
            if not PORT.match(port):
                raise ValueError(f"port {port!r} is not HOST:CONTAINER[/tcp|udp]")
        return ports

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, volumes: list[str]) -> list[str]:
        for volume in volumes:
            if not VOLUME.match(volume):
                raise ValueError(f"volume {volume!r} is not SOURCE:/PATH[:ro|rw]")
        return volumes


SERVICE = Kind(
    "Service",
    ServiceSpec,
    planner="reconciler.planners.service:plan_service",
    phases={"service": 50},
    live_from="provider",
)
