"""Provider: a connection to one live system (MAAS, OpenStack, a Docker engine, NetBox, SMTP)."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import Field

from reconciler.model.base import SpecModel
from reconciler.model.registry import Kind, Ref


class ProviderType(str, enum.Enum):
    MAAS = "maas"
    OPENSTACK = "openstack"
    DOCKER = "docker"
    NETBOX = "netbox"
    SMTP = "smtp"


class NetboxInventory(SpecModel):
    """Turn NetBox devices into Server resources (Git wins where both define one)."""

    filter: dict[str, str] = Field(default_factory=lambda: {"tag": "metalform"})
    template: dict[str, Any] = Field(
        default_factory=dict,
        description="Server spec fields every imported Server gets (bmc.credential, power, ...)",
    )


class ProviderSpec(SpecModel):
    type: ProviderType
    url: str = Field(description="API endpoint: https://maas/MAAS, unix:///run/docker.sock, ...")
    credential: Annotated[str, Ref("Credential")] | None = Field(
        default=None, description="Name of a Credential"
    )
    verify_tls: bool = True
    timeout: float = Field(default=10.0, gt=0, description="Seconds for one request")
    region: str | None = None
    project: str | None = None
    domain: str | None = None
    inventory: NetboxInventory | None = None


PROVIDER = Kind("Provider", ProviderSpec)
