"""Server and BiosTemplate: BMC connection, power, BIOS settings and boot override."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import Field

from reconciler.model.base import IgnorableSpec, Resource, SpecModel, typed
from reconciler.model.bmc import BmcAccount, BmcNetwork
from reconciler.model.checks import ManagedSpec
from reconciler.model.registry import Kind, ProviderTypeOf, Ref

BiosValue = str | int | bool | float


class BmcDriver(str, enum.Enum):
    REDFISH = "redfish"
    IPMI = "ipmi"


class PowerState(str, enum.Enum):
    ON = "On"
    OFF = "Off"


class BootSource(str, enum.Enum):
    PXE = "Pxe"
    HDD = "Hdd"
    CD = "Cd"
    BIOS_SETUP = "BiosSetup"
    NONE = "None"


class BootMode(str, enum.Enum):
    ONCE = "Once"
    CONTINUOUS = "Continuous"


class RebootPolicy(str, enum.Enum):
    ALLOWED = "Allowed"
    NEVER = "Never"
    IN_MAINTENANCE_WINDOW = "InMaintenanceWindow"


class Bmc(SpecModel):
    driver: BmcDriver
    address: str = Field(description="Redfish base URL (https://host[:port]) or IPMI host[:port]")
    credential: Annotated[str, Ref("Credential")] = Field(description="Name of a Credential")
    system_id: str | None = Field(
        default=None, description="Redfish System identity; absent when the BMC has one system"
    )
    verify_tls: bool = True
    profile: Annotated[str, Ref("BmcProfile")] | None = Field(
        default=None, description="Name of a BmcProfile giving accounts and network"
    )
    accounts: list[BmcAccount] | None = None
    prune_accounts: bool | None = Field(
        default=None,
        description="Disable accounts Git does not list (never the one Metalform uses); "
        "default false: they are reported",
    )
    network: BmcNetwork | None = None


class Match(SpecModel):
    manufacturer: str | None = None
    model: str | None = None


class BiosTemplateSpec(IgnorableSpec):
    extends: Annotated[str, Ref("BiosTemplate")] | None = Field(
        default=None, description="Name of the BiosTemplate to extend"
    )
    match: Match | None = None
    attributes: dict[str, BiosValue] = Field(default_factory=dict)


class Bios(SpecModel):
    template: Annotated[str, Ref("BiosTemplate")] | None = None
    attributes: dict[str, BiosValue] = Field(default_factory=dict)


class Firmware(SpecModel):
    baseline: Annotated[str, Ref("FirmwareBaseline")] = Field(
        description="Name of the FirmwareBaseline the server must run"
    )


class Boot(SpecModel):
    source: BootSource
    mode: BootMode = BootMode.CONTINUOUS


class ProvisioningState(str, enum.Enum):
    READY = "Ready"
    DEPLOYED = "Deployed"
    RELEASED = "Released"


class UserData(SpecModel):
    template: str = Field(description="Jinja2 cloud-init template, a path in the repository")
    vars: dict[str, Any] = Field(default_factory=dict)


class Provisioning(SpecModel):
    provider: Annotated[str, Ref("Provider", "maas")] = Field(
        description="Name of a Provider of type maas"
    )
    state: ProvisioningState
    distro_series: str | None = None
    user_data: UserData | None = None
    tags: list[str] = Field(default_factory=list)


class ServerSpec(ManagedSpec):
    bmc: Bmc
    hostname: str | None = None
    provisioning: Provisioning | None = None
    power: PowerState | None = None
    bios: Bios | None = None
    firmware: Firmware | None = None
    boot: Boot | None = None
    reboot: RebootPolicy = RebootPolicy.ALLOWED


def _server_drivers(resource: Resource, provider_type: ProviderTypeOf) -> list[str]:
    """A Server is read by its BMC driver and, when it is provisioned, by MAAS too."""
    spec = typed(resource, ServerSpec).spec
    keys = [spec.bmc.driver.value]
    if spec.provisioning is not None:
        keys.append(provider_type(spec.provisioning.provider) or "maas")
    return keys


BIOS_TEMPLATE = Kind("BiosTemplate", BiosTemplateSpec)
SERVER = Kind(
    "Server",
    ServerSpec,
    planner="reconciler.planners.server:plan_server",
    phases={
        "credential": 0,
        "bmc": 0,
        "account": 1,
        "network": 2,
        "firmware": 5,
        "bios": 10,
        "boot": 15,
        "power": 20,
        "provisioning": 30,
    },
    drivers=_server_drivers,
)
