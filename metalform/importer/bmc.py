"""Probe BMCs by address through the providers' own read paths (so a plan reads the same).

Every address is probed concurrently (`parallelism` at once); the requests to one BMC share
its per-endpoint slots in the providers' `Limiter`. An address that does not answer, refuses
the credential or is not a BMC becomes a `Failure` with why, and the others go on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from metalform.importer.documents import BIOS_PREFIX, Found
from providers.ipmi import IpmiProvider
from providers.redfish import RedfishProvider
from reconciler.errors import AuthenticationError, MetalformError, TemporaryError
from reconciler.model import LiveResource, Metadata, Resource
from reconciler.model.hardware import ServerSpec
from reconciler.provider import ProviderContext
from reconciler.secrets import REDACTOR


@dataclass(frozen=True)
class Failure:
    address: str
    reason: str


@dataclass(frozen=True)
class Probe:
    """How to reach the BMCs of a range."""

    credential: str
    scheme: str = "https"
    port: int | None = None
    """Redfish port (default: the scheme's) or IPMI port (default 623)."""
    insecure: bool = False
    ipmi_fallback: bool = False
    ipmi_port: int = 623


Outcome = tuple[list[Found], Failure | None]


def _host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def redfish_url(address: str, probe: Probe) -> str:
    default = 443 if probe.scheme == "https" else 80
    port = "" if probe.port in (None, default) else f":{probe.port}"
    return f"{probe.scheme}://{_host(address)}{port}"


def _server(bmc: dict[str, Any]) -> Resource:
    """A throw-away Server for the providers' read path (named after nothing in Git)."""
    return Resource(
        kind="Server",
        metadata=Metadata(name="import-probe"),
        spec=ServerSpec.model_validate({"bmc": bmc}),
    )


def why(exc: MetalformError) -> str:
    """The report's reason: wrong credential, unreachable, or not a BMC."""
    text = REDACTOR(str(exc))
    if isinstance(exc, AuthenticationError):
        return f"wrong credential: {text}"
    if isinstance(exc, TemporaryError) or "did not answer" in text:
        return f"unreachable: {text}"
    return f"not a usable BMC: {text}"


def writable_bios(live: LiveResource) -> dict[str, Any]:
    """BIOS attributes as they will be after the next boot, without read-only ones."""
    registry = live.facts.get("biosRegistry") or {}
    values = {**live.state, **live.pending}
    return {
        path[len(BIOS_PREFIX) :]: value
        for path, value in values.items()
        if path.startswith(BIOS_PREFIX)
        and not (registry.get(path[len(BIOS_PREFIX) :]) or {}).get("readOnly")
    }


class BmcProber:
    """Probes addresses with one Redfish and one IPMI provider sharing `context`."""

    def __init__(self, context: ProviderContext, probe: Probe) -> None:
        self.context = context
        self.probe = probe
        self.redfish = RedfishProvider(context)
        self.ipmi = IpmiProvider(context)

    def close(self) -> None:
        self.redfish.close()
        self.ipmi.close()

    def redfish_one(self, address: str) -> Outcome:
        url = redfish_url(address, self.probe)
        bmc: dict[str, Any] = {
            "driver": "redfish",
            "address": url,
            "credential": self.probe.credential,
            "verifyTls": not self.probe.insecure,
        }
        try:
            systems = self.redfish.list_systems(_server(bmc).spec.bmc)  # type: ignore[attr-defined]
            found = []
            for system in systems:
                live = self.redfish.read_one(_server({**bmc, "systemId": system["systemId"]}))
                found.append(
                    Found(
                        driver="redfish",
                        address=address,
                        bmc_address=url,
                        system_id=system["systemId"],
                        hostname=system["hostName"],
                        serial=system["serial"],
                        manufacturer=system["manufacturer"],
                        model=system["model"],
                        power=live.state.get("power"),
                        bios=writable_bios(live),
                    )
                )
            return found, None
        except MetalformError as exc:
            if self.probe.ipmi_fallback and not isinstance(exc, AuthenticationError):
                found_ipmi, failure = self.ipmi_one(address, self.probe.ipmi_port)
                if failure is None:
                    return found_ipmi, None
                return [], Failure(address, f"{why(exc)}; IPMI: {failure.reason}")
            return [], Failure(address, why(exc))

    def ipmi_one(self, address: str, port: int | None = None) -> Outcome:
        bmc_address = f"{_host(address)}:{port or self.probe.port or 623}"
        bmc = {"driver": "ipmi", "address": bmc_address, "credential": self.probe.credential}
        try:
            live = self.ipmi.read_one(_server(bmc))
        except MetalformError as exc:
            return [], Failure(address, why(exc))
        product = live.facts.get("productId")
        found = Found(
            driver="ipmi",
            address=address,
            bmc_address=bmc_address,
            system_id=None,
            hostname=None,
            serial=None,
            manufacturer=live.facts.get("manufacturer"),
            model=f"product-{product}" if product is not None else None,
            power=live.state.get("power"),
        )
        return [found], None


def probe_all(
    addresses: Sequence[str], one: Callable[[str], Outcome], parallelism: int
) -> tuple[list[Found], list[Failure]]:
    """Probe every address concurrently; results in the order of `addresses`."""
    found: list[Found] = []
    failures: list[Failure] = []
    if not addresses:
        return found, failures
    with ThreadPoolExecutor(
        max_workers=max(1, min(parallelism, len(addresses))), thread_name_prefix="import"
    ) as pool:
        for systems, failure in pool.map(one, addresses):
            found.extend(systems)
            if failure is not None:
                failures.append(failure)
    return found, failures
