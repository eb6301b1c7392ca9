"""Health checks run after a resource's actions: each must pass or the resource has failed."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Discriminator, Field, Tag

from reconciler.model.base import IgnorableSpec, SpecModel

TIMEOUT_PATTERN = r"^\d+(\.\d+)?(ms|s|m)$"


def timeout_seconds(value: str) -> float:
    """`500ms`, `30s`, `5m` -> seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value)
    if match is None:
        raise ValueError(f"{value!r} is not a timeout like 30s, 500ms or 5m")
    number, unit = float(match.group(1)), match.group(2)
    return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number


class _Check(SpecModel):
    timeout: str = Field(
        pattern=TIMEOUT_PATTERN,
        description="How long the check may keep failing before the resource counts as "
        "failed: 30s, 500ms, 5m (required)",
    )

    @property
    def seconds(self) -> float:
        return timeout_seconds(self.timeout)


class TcpCheck(_Check):
    tcp: str = Field(pattern=r"^\S+:\d{1,5}$", description="HOST:PORT that accepts a connection")


class HttpCheck(_Check):
    http: str = Field(pattern=r"^https?://\S+$", description="URL answered with `status`")
    status: int = Field(default=200, ge=100, le=599)


class SshCheck(_Check):
    ssh: str = Field(description="HOST[:PORT] whose SSH server sends its banner")


class NovaComputeCheck(_Check):
    nova_compute: str = Field(description="Nova compute host that must be up and enabled")


class MaasStatusCheck(_Check):
    maas_status: str = Field(description="MAAS status the machine must reach (Deployed)")


def _check_type(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in CHECK_TYPES if k in value), None)
    return next((k for k, model in CHECK_TYPES.items() if isinstance(value, model)), None)


Check = Annotated[
    Annotated[TcpCheck, Tag("tcp")]
    | Annotated[HttpCheck, Tag("http")]
    | Annotated[SshCheck, Tag("ssh")]
    | Annotated[NovaComputeCheck, Tag("novaCompute")]
    | Annotated[MaasStatusCheck, Tag("maasStatus")],
    Discriminator(_check_type),
]
"""One of the check types, told apart by the key that names it."""


CHECK_TYPES: dict[str, type[_Check]] = {
    "tcp": TcpCheck,
    "http": HttpCheck,
    "ssh": SshCheck,
    "novaCompute": NovaComputeCheck,
    "maasStatus": MaasStatusCheck,
}


def _check_shape(item: object) -> object:
    """Name the one problem of a check without a type or timeout (a union lists them all)."""
    if not isinstance(item, dict):
        return item
    kinds = [k for k in item if k in CHECK_TYPES]
    if len(kinds) != 1:
        names = ", ".join(CHECK_TYPES)
        found = ", ".join(str(k) for k in item if k not in ("timeout", "status")) or "none"
        raise ValueError(f"a check has exactly one type of {names}; found {found}")
    if "timeout" not in item:
        raise ValueError(f"the {kinds[0]} check needs a timeout (e.g. timeout: 30s)")
    return item


class ManagedSpec(IgnorableSpec):
    """Base of the spec of every resource Metalform acts on: ignore and health checks."""

    checks: list[Annotated[Check, BeforeValidator(_check_shape)]] = Field(
        default_factory=list,
        description="Health checks that must pass after the resource's actions",
    )
