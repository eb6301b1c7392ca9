"""Reading one Server from its BMC within a deadline, with as few requests as it takes.

A read is three GETs along the links the BMC publishes (System -> Bios -> Bios/Settings)
plus, for the first BMC of each model in a run and only when not on disk, the attribute
registry; firmware, BMC accounts and network are read only for the Servers that declare them.
Those three parse only JSON (no sushy resource objects). Every request's timeout is what is
left of the BMC's deadline, temporary failures are retried with backoff while time remains, and
a BMC that did not answer in time opens its circuit (see `RedfishClient.trip`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from providers.base import MAX_BACKOFF
from providers.redfish import accounts, firmware, mapping
from providers.redfish.client import BmcConnection, NotFound, RedfishClient
from reconciler.errors import PermanentError, ProviderError, TemporaryError, UnreachableError
from reconciler.model import LiveResource, Resource
from reconciler.model.hardware import Bmc
from reconciler.plan import REGISTRY_FROM_CACHE
from reconciler.provider import ProviderContext


class Deadline:
    """The time one BMC's read may take, retries included."""

    def __init__(self, seconds: float, request_timeout: float, endpoint: str) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.request_timeout = request_timeout
        self.endpoint = endpoint

    def left(self) -> float:
        return self.at - time.monotonic()

    def timeout(self) -> float:
        """The timeout of the next request: the request timeout, or less if time runs out."""
        left = self.left()
        if left <= 0:
            raise UnreachableError(
                endpoint=self.endpoint, cause=f"no answer within the {self.seconds:g}s deadline"
            )
        return min(self.request_timeout, left)


def read_server(
    client: RedfishClient,
    resource: Resource,
    bmc: Bmc,
    deadline: Deadline,
    context: ProviderContext,
    sleep: Callable[[float], None] = time.sleep,
) -> LiveResource:
    """Read a Server, retrying temporary failures with backoff until its deadline."""
    retries = context.retries
    attempt = 0
    while True:
        try:
            conn = client.connection(bmc)
            try:
                live = observe(client, resource, bmc, conn, deadline, context)
                client.used(conn)
                return live
            except ProviderError as exc:
                client.note_failure(conn, exc)
                raise
        except TemporaryError as exc:
            delay = min(MAX_BACKOFF, max(exc.retry_after, 0.2) * (2**attempt))
            attempt += 1
            if attempt > retries or delay >= deadline.left():
                if isinstance(exc, UnreachableError):
                    client.trip(bmc, exc)
                raise UnreachableError(
                    endpoint=deadline.endpoint,
                    cause=f"{_cause(exc, deadline.endpoint)} ({attempt} attempt"
                    f"{'s' if attempt > 1 else ''} within the {deadline.seconds:g}s deadline)",
                    retry_after=exc.retry_after,
                ) from None
            sleep(delay)


def _cause(exc: TemporaryError, endpoint: str) -> str:
    """What went wrong, without the endpoint the final message names already."""
    cause = exc.fields.get("cause") if isinstance(exc, UnreachableError) else None
    text = str(cause) if cause else str(exc)
    for prefix in (f"{endpoint} did not answer: ", f"{endpoint} "):
        text = text.removeprefix(prefix)
    return text


def observe(
    client: RedfishClient,
    resource: Resource,
    bmc: Bmc,
    conn: BmcConnection,
    deadline: Deadline,
    context: ProviderContext,
) -> LiveResource:
    """One attempt at reading the Server: System, Bios, Bios settings (and the registry), then
    firmware, accounts and the BMC network when the Server declares them."""
    path = conn.system_path(bmc.system_id, deadline.timeout())
    try:
        system = conn.get_json(path, deadline.timeout())
    except NotFound:
        raise PermanentError(
            f"{conn.endpoint} has no system {bmc.system_id!r} (bmc.systemId)"
        ) from None
    power, moving = mapping.power_state(system.get("PowerState"))
    state: dict[str, Any] = {}
    if power is not None:
        state[mapping.POWER] = power
    boot = system.get("Boot") or {}
    state.update(
        mapping.boot_state(
            boot.get("BootSourceOverrideTarget"), boot.get("BootSourceOverrideEnabled")
        )
    )
    manufacturer, model = system.get("Manufacturer"), system.get("Model")
    facts: dict[str, Any] = {
        "manufacturer": manufacturer,
        "model": model,
        "systemId": system.get("Id"),
        "hostName": system.get("HostName") or None,
        "serialNumber": system.get("SerialNumber") or None,
    }
    pending: dict[str, Any] = {}
    bios_link = (system.get("Bios") or {}).get("@odata.id")
    if bios_link:
        bios = conn.get_json(bios_link, deadline.timeout())
        current = bios.get("Attributes") or {}
        state.update(mapping.bios_state(current))
        settings = ((bios.get("@Redfish.Settings") or {}).get("SettingsObject") or {}).get(
            "@odata.id"
        )
        if settings:
            staged = conn.get_json(settings, deadline.timeout()).get("Attributes")
            pending = mapping.bios_pending(current, staged)
        registry_name = bios.get("AttributeRegistry")
        if registry_name:
            registry = client.attribute_registry(
                conn, registry_name, manufacturer or "", model or "", deadline.timeout()
            )
            if registry is not None:
                facts["biosRegistry"] = registry
                if client.registries.came_from_disk(registry_name, manufacturer, model):
                    facts[REGISTRY_FROM_CACHE] = registry_name
    # These go through sushy's resources (and the service root), and only for the Servers
    # that declare a firmware baseline, BMC accounts or network: a plain read stays at three.
    with conn.errors():
        if firmware.wanted(resource):
            firmware.observe(conn, system, state, facts, client.uploads)
        state.update(accounts.read_bmc(resource, conn, system, context, client.passwords))
    health = (system.get("Status") or {}).get("Health")
    return LiveResource(
        address=resource.address,
        state=state,
        pending=pending,
        facts=facts,
        health=mapping.health(health, moving),
    )
