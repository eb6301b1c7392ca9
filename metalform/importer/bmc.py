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
from typing import Any, TypeVar

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
Results = tuple[list[Found], list[Failure]]
T = TypeVar("T")
R = TypeVar("R")


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

    def redfish_bmc(self, address: str) -> dict[str, Any]:
        return {
            "driver": "redfish",
            "address": redfish_url(address, self.probe),
            "credential": self.probe.credential,
            "verifyTls": not self.probe.insecure,
        }

    def redfish_systems(self, address: str) -> tuple[list[str], Failure | None]:
        """The system ids at `address`; with --ipmi-fallback, IPMI is noted as the way."""
        bmc = self.redfish_bmc(address)
        try:
            return self.redfish.system_ids(_server(bmc).spec.bmc), None  # type: ignore[attr-defined]
        except MetalformError as exc:
            return [], Failure(address, why(exc))

    def redfish_read(self, address: str, system_id: str) -> Outcome:
        bmc = self.redfish_bmc(address)
        try:
            live = self.redfish.read_one(_server({**bmc, "systemId": system_id}))
        except MetalformError as exc:
            return [], Failure(f"{address} (system {system_id})", why(exc))
        facts = live.facts
        found = Found(
            driver="redfish",
            address=address,
            bmc_address=bmc["address"],
            system_id=system_id,
            hostname=facts.get("hostName"),
            serial=facts.get("serialNumber"),
            manufacturer=facts.get("manufacturer"),
            model=facts.get("model"),
            power=live.state.get("power"),
            bios=writable_bios(live),
        )
        return [found], None

    def redfish_all(self, addresses: Sequence[str], parallelism: int) -> Results:
        """Two concurrent rounds: every address's systems, then every system (a BMC serving
        hundreds of systems is read as fast as hundreds of BMCs)."""
        found: list[Found] = []
        failures: list[Failure] = []
        pairs: list[tuple[str, str]] = []
        fallback: list[str] = []
        for address, (ids, failure) in zip(
            addresses, _map(self.redfish_systems, addresses, parallelism), strict=True
        ):
            pairs.extend((address, system_id) for system_id in ids)
            if failure is None:
                continue
            if self.probe.ipmi_fallback and not failure.reason.startswith("wrong credential"):
                fallback.append(address)
            else:
                failures.append(failure)
        for systems, failure in _map(lambda p: self.redfish_read(*p), pairs, parallelism):
            found.extend(systems)
            failures.extend([failure] if failure else [])
        if fallback:
            more, failed = probe_all(fallback, self.ipmi_fallback_one, parallelism)
            found.extend(more)
            failures.extend(failed)
        return found, failures

    def ipmi_fallback_one(self, address: str) -> Outcome:
        systems, failure = self.ipmi_one(address, self.probe.ipmi_port)
        if failure is not None:
            failure = Failure(address, f"no Redfish answer; IPMI: {failure.reason}")
        return systems, failure

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


def _map(fn: Callable[[T], R], items: Sequence[T], parallelism: int) -> list[R]:
    if not items:
        return []
    workers = max(1, min(parallelism, len(items)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="import") as pool:
        return list(pool.map(fn, items))


def probe_all(addresses: Sequence[str], one: Callable[[str], Outcome], parallelism: int) -> Results:
    """Probe every address concurrently; results in the order of `addresses`."""
    found: list[Found] = []
    failures: list[Failure] = []
    for systems, failure in _map(one, addresses, parallelism):
        found.extend(systems)
        if failure is not None:
            failures.append(failure)
    return found, failures
