"""Planning a Server's BMC network services (NTP, enabled protocols, host name).

Pure. Live state paths (the providers' contract): `bmc.network.ntpServers` (list),
`bmc.network.protocols.<ipmi|ssh|http>` (bool) and `bmc.network.hostname`. A setting the BMC
does not report is a warning, not managed; turning off the protocol Metalform reaches the BMC
through is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model import Diagnostic, DiffEntry, Expectation, LiveResource, Resource, Severity
from reconciler.model.bmc import BmcNetwork
from reconciler.model.hardware import BmcDriver, ServerSpec
from reconciler.planners.base import Draft, PlanContext
from reconciler.planners.diff import diff_declared

NETWORK = "bmc.network."
PROTOCOL_IN_USE = {BmcDriver.REDFISH: "http", BmcDriver.IPMI: "ipmi"}
"""The network service each driver reaches the BMC through: turning it off cuts us off."""


@dataclass
class BmcPlan:
    """What the BMC planners (network, accounts, rotation) add to a Server's plan."""

    entries: list[DiffEntry]
    drafts: list[Draft]
    diagnostics: list[Diagnostic]


def unsupported(
    server: Resource[ServerSpec], ctx: PlanContext, operation: str, what: str, block: str
) -> Diagnostic | None:
    """An error at `spec.bmc.<block>` when the Server's driver cannot perform `operation`."""
    driver = server.spec.bmc.driver.value
    if ctx.offers(driver, operation):
        return None
    return ctx.diagnostic(
        server,
        Severity.ERROR,
        f"driver {driver} cannot manage {what}",
        path=("spec", "bmc", block),
        field_name=f"spec.bmc.{block}",
    )


def network_state(network: BmcNetwork) -> dict[str, Any]:
    want: dict[str, Any] = {}
    if network.ntp_servers is not None:
        want[NETWORK + "ntpServers"] = list(network.ntp_servers)
    if network.protocols is not None:
        for name in ("ipmi", "ssh", "http"):
            value = getattr(network.protocols, name)
            if value is not None:
                want[f"{NETWORK}protocols.{name}"] = value
    if network.hostname is not None:
        want[NETWORK + "hostname"] = network.hostname
    return want


def plan_network(
    server: Resource[ServerSpec],
    live: LiveResource,
    ctx: PlanContext,
    network: BmcNetwork,
    result: BmcPlan,
    after: tuple[str, ...],
) -> None:
    want = network_state(network)
    used = PROTOCOL_IN_USE[server.spec.bmc.driver]
    if want.get(f"{NETWORK}protocols.{used}") is False:
        result.diagnostics.append(
            ctx.diagnostic(
                server,
                Severity.ERROR,
                f"turning off {used} would cut Metalform off from this BMC "
                f"(driver {server.spec.bmc.driver.value}); refused",
                path=_network_path(server, ctx, ("protocols", used)),
                field_name=f"spec.bmc.network.protocols.{used}",
            )
        )
        want.pop(f"{NETWORK}protocols.{used}")
    for path in list(want):
        if path not in live.state:
            result.diagnostics.append(
                ctx.diagnostic(
                    server, Severity.WARNING, f"the BMC does not report {path}; it is not managed"
                )
            )
            want.pop(path)
    diff = diff_declared(want, live.state)
    if not diff:
        return
    refused = unsupported(server, ctx, "network.set", "BMC network services", "network")
    if refused is not None:
        result.diagnostics.append(refused)
        return
    result.entries.extend(diff.entries)
    result.drafts.append(
        Draft(
            key="network",
            operation="network.set",
            params=_network_params(diff.changed),
            after=after,
            expect=Expectation(current=diff.changed),
            description="set BMC network services",
        )
    )


def _network_path(
    server: Resource[ServerSpec], ctx: PlanContext, rest: tuple[str, ...]
) -> tuple[str | int, ...]:
    """Where the network block is declared: the Server's own, else its profile's path."""
    if server.spec.bmc.network is not None:
        return ("spec", "bmc", "network", *rest)
    return ("spec", "bmc", "profile")


def _network_params(changed: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for path, value in changed.items():
        rest = path.removeprefix(NETWORK)
        if rest.startswith("protocols."):
            params.setdefault("protocols", {})[rest.removeprefix("protocols.")] = value
        else:
            params[rest] = value
    return params
