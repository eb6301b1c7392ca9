"""Service: a container Metalform runs on a Docker engine."""

from __future__ import annotations

import enum
import re

from pydantic import Field, field_validator

from reconciler.model.base import SpecModel

PORT = re.compile(r"(?:([0-9]{1,5}):)?([0-9]{1,5})(?:/(?:tcp|udp))?")
VOLUME = re.compile(r"[^:\n]+:/[^:\n]*(:(ro|rw))?")
"""Both are matched with `fullmatch` (`$` would accept a trailing newline)."""
MAX_PORT = 65535


class ServiceState(str, enum.Enum):
    RUNNING = "Running"
    STOPPED = "Stopped"


class RestartPolicy(str, enum.Enum):
    NO = "no"
    ALWAYS = "always"
    UNLESS_STOPPED = "unless-stopped"
    ON_FAILURE = "on-failure"


class ServiceSpec(SpecModel):
    provider: str = Field(description="Name of a Provider of type docker")
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
            match = PORT.fullmatch(port)
            if not match:
                raise ValueError(f"port {port[:40]!r} is not HOST:CONTAINER[/tcp|udp]")
            numbers = [int(n) for n in match.groups() if n is not None]
            if not all(1 <= n <= MAX_PORT for n in numbers):
                raise ValueError(f"port {port!r}: port numbers are 1 to {MAX_PORT}")
        return ports

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, volumes: list[str]) -> list[str]:
        for volume in volumes:
            if not VOLUME.fullmatch(volume):
                raise ValueError(f"volume {volume[:80]!r} is not SOURCE:/PATH[:ro|rw]")
        return volumes
