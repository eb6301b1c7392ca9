"""BMC accounts and network services, and the BmcProfile kind several Servers share.

A Server's `spec.bmc` may declare `accounts`, `pruneAccounts` and `network` itself or take
them from a `BmcProfile` (`spec.bmc.profile`); what the Server declares wins, block by block.
A profile can be guarded by `match: {manufacturer, model}`, like a BiosTemplate.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field

from reconciler.model.base import SpecModel
from reconciler.model.registry import Kind, Ref


class AccountRole(str, enum.Enum):
    ADMINISTRATOR = "Administrator"
    OPERATOR = "Operator"
    READ_ONLY = "ReadOnly"


class BmcAccount(SpecModel):
    """One local account of the BMC; its password is the secret of the named Credential."""

    username: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")
    role: AccountRole
    enabled: bool = True
    credential: Annotated[str, Ref("Credential")] = Field(
        description="Name of the Credential whose password the account has"
    )


class BmcProtocols(SpecModel):
    """Network services of the BMC, on (true) or off (false); absent: not managed."""

    ipmi: bool | None = None
    ssh: bool | None = None
    http: bool | None = Field(default=None, description="HTTP and HTTPS (Redfish)")


class BmcNetwork(SpecModel):
    ntp_servers: list[str] | None = Field(default=None, max_length=8)
    protocols: BmcProtocols | None = None
    hostname: str | None = Field(default=None, max_length=63, pattern=r"^[A-Za-z0-9.-]+$")


class BmcMatch(SpecModel):
    manufacturer: str | None = None
    model: str | None = None


class BmcProfileSpec(SpecModel):
    match: BmcMatch | None = None
    accounts: list[BmcAccount] | None = None
    prune_accounts: bool | None = None
    network: BmcNetwork | None = None


BMC_PROFILE = Kind("BmcProfile", BmcProfileSpec)
