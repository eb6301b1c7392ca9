"""The Redfish provider: Servers whose `bmc.driver` is `redfish`, through sushy.

Live state, in the flat paths the diff compares:
- `state`: `power` (On|Off), `boot.source`, `boot.mode`, `bios.attributes.<Name>` (in effect);
- `pending`: `bios.attributes.<Name>` staged on the BMC for the next boot, only those whose
  value differs from the one in effect (some BMCs list every attribute as "pending");
- `facts`: `manufacturer`, `model`, `systemId`, `hostName`, `serialNumber` and, when the BMC
  publishes one, `biosRegistry` ({Name: {type, readOnly, allowedValues, lowerBound,
  upperBound}}).

Reads follow `providers.redfish.reads` (three GETs per Server); firmware, accounts and the
BMC network are read only for the Servers that declare them.

Operations: `bios.set` {attributes}, `boot.set` {source, mode}, `power.on`, `power.off` and
`power.reset` (each optionally {force: true}). A graceful power-off falls back to a forced one
after `extra["redfish.gracefulTimeout"]` seconds (default: half the operation timeout, at most
300). A restart is never retried and never escalated: whether a reboot happened cannot be
told reliably, and a second reboot is worse than a failed action.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import sushy

from providers.base import read_each, with_retries
from providers.redfish import accounts, firmware, mapping
from providers.redfish.client import (
    ROOT_PREFIX,
    BmcConnection,
    RedfishClient,
    base_url,
    endpoint_of,
)
from providers.redfish.reads import Deadline, read_server
from providers.redfish.uploads import UploadJournal
from reconciler.errors import PermanentError, ProviderError, TemporaryError
from reconciler.model import Action, Address, LiveResource, Resource, is_of
from reconciler.model.hardware import Bmc, BmcDriver, ServerSpec
from reconciler.provider import ProviderContext

log = logging.getLogger("metalform.providers.redfish")
T = TypeVar("T")

DEADLINE_TIMEOUTS = 2.0
"""Without `ProviderContext.deadline`, a BMC's read may take this many request timeouts."""
POLL_FIRST = 0.1
POLL_MAX = 2.0


def _value(member: Any) -> Any:
    """The wire value of a sushy enum member (sushy maps strings to enums)."""
    return getattr(member, "value", member)


class RedfishProvider:
    """Reads and changes Servers through their Redfish BMC."""

    name: ClassVar[str] = "redfish"
    kinds: ClassVar[frozenset[str]] = frozenset({"Server"})
    operations: ClassVar[frozenset[str]] = frozenset(
        {"power.on", "power.off", "power.reset", "bios.set", "boot.set"}
        | firmware.OPERATIONS
        | accounts.OPERATIONS
    )

    def __init__(self, context: ProviderContext) -> None:
        self._context = context
        self.context = context
        self._client = RedfishClient(context)
        self._account_locks: dict[tuple[str, str], threading.Lock] = {}
        self._account_locks_lock = threading.Lock()
        self._firmware = firmware.FirmwareOps(self)
        default_graceful = min(300.0, context.operation_timeout / 2)
        self._graceful_timeout = float(
            context.extra.get("redfish.gracefulTimeout", default_graceful)  # type: ignore[arg-type]
        )
        self._deadline = context.deadline or DEADLINE_TIMEOUTS * context.timeout

    # -- Provider protocol -------------------------------------------------------------------

    @property
    def uploads(self) -> UploadJournal:
        """The journal of images pushed to BMC update tasks (`uploads`)."""
        return self._client.uploads

    def endpoint(self, resource: Resource) -> str:
        """`redfish:` + the BMC's base URL."""
        return endpoint_of(self._bmc(resource).address)

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """Read every Server; one that cannot be read comes back Unreachable with the cause."""
        return read_each(resources, self.read_one, parallelism=self._context.limiter.parallelism)

    def read_one(self, resource: Resource) -> LiveResource:
        """Read one Server within its deadline (raises a ProviderError when it cannot)."""
        bmc = self._bmc(resource)
        deadline = Deadline(self._deadline, self._context.timeout, endpoint_of(bmc.address))
        return read_server(self._client, resource, bmc, deadline, self._context)

    def system_ids(self, bmc: Bmc) -> list[str]:
        """The Ids of the Systems a BMC serves (a pure read, for `metalform import`)."""

        def once() -> list[str]:
            conn = self._client.connection(bmc)
            try:
                collection = conn.get_json(f"{ROOT_PREFIX}Systems")
                members = [str(m.get("@odata.id", "")) for m in collection.get("Members", [])]
                return [m.rstrip("/").rsplit("/", 1)[-1] for m in members if m]
            except ProviderError as exc:
                self._client.note_failure(conn, exc)
                raise

        return with_retries(
            once, retries=self._context.retries, what=f"list {endpoint_of(bmc.address)}"
        )

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        """Perform one action and return the Server read back afterwards."""
        operation = action.operation
        if operation not in self.operations:
            raise PermanentError(f"the redfish provider cannot perform {operation!r}")
        bmc = self._bmc(resource)
        params = action.params
        if operation in firmware.OPERATIONS:
            return self._firmware.execute(action, resource)
        if operation == "bios.set":
            try:
                attributes = mapping.bios_patch(params)
            except ValueError as exc:
                raise PermanentError(f"{resource.address}: {exc}") from None
            if attributes:
                self._attempt(
                    resource,
                    lambda conn: conn.system(bmc.system_id).bios.set_attributes(attributes),
                    what=operation,
                )
        elif operation in accounts.OPERATIONS:
            self._bmc_action(resource, action)
        elif operation == "boot.set":
            try:
                target, enabled = mapping.boot_request(
                    params["source"], params.get("mode", "Continuous")
                )
            except (KeyError, ValueError) as exc:
                raise PermanentError(
                    f"{resource.address}: boot.set needs params source (Pxe|Hdd|Cd|BiosSetup|"
                    f"None) and mode (Once|Continuous): {exc}"
                ) from None
            self._attempt(
                resource,
                lambda conn: conn.system(bmc.system_id).set_system_boot_options(
                    target=sushy.BootSource(target), enabled=enabled
                ),
                what=operation,
            )
        else:
            self._power(resource, bmc, operation, force=params.get("force") is True)
        return self.read_one(resource)

    def close(self) -> None:
        """End the BMC sessions."""
        self._client.close()

    # -- BMC accounts and network ------------------------------------------------------------

    def _bmc_action(self, resource: Resource, action: Action) -> None:
        """An account or network action; after a password change, log in again.

        One at a time per BMC and credential: several Servers behind one BMC share its
        accounts, and an action holding a connection opened with the previous secret must not
        run while another one changes that password (it would be refused mid-way). The next
        one opens a new connection, finds the BMC on the new secret and has nothing to do."""
        bmc = self._bmc(resource)
        with self._account_lock(bmc):
            conn, relogin = self._attempt(
                resource,
                lambda c: (
                    c,
                    accounts.execute(
                        action,
                        c,
                        c.system(bmc.system_id),
                        self._context,
                        self._client.passwords,
                    ),
                ),
                what=action.operation,
            )
            if relogin:
                self._client.evict(conn)

    def _account_lock(self, bmc: Bmc) -> threading.Lock:
        key = (base_url(bmc.address), bmc.credential)
        with self._account_locks_lock:
            return self._account_locks.setdefault(key, threading.Lock())

    # -- power -------------------------------------------------------------------------------

    def _power(self, resource: Resource, bmc: Bmc, operation: str, *, force: bool) -> None:
        conn, system = self._attempt(
            resource, lambda c: (c, c.system(bmc.system_id)), what=operation
        )
        power, _ = mapping.power_state(_value(system.power_state))
        with conn.errors():
            allowed = {_value(v) for v in system.get_allowed_reset_system_values()}
        timeout = self._context.operation_timeout
        if operation == "power.on":
            if power != "On":
                self._reset(resource, conn, system, mapping.reset_type("On", allowed))
                self._wait_power(resource, conn, system, "On", timeout)
        elif operation == "power.off":
            if power == "Off":
                return
            if not force:
                kind = mapping.reset_type("GracefulShutdown", allowed)
                self._reset(resource, conn, system, kind)
                if kind == "ForceOff" or self._wait_power(
                    resource, conn, system, "Off", self._graceful_timeout
                ):
                    if kind == "ForceOff":
                        self._wait_power(resource, conn, system, "Off", timeout)
                    return
                log.warning(
                    "%s: still on %.0fs after a graceful shutdown; forcing it off",
                    resource.address,
                    self._graceful_timeout,
                )
            self._reset(resource, conn, system, "ForceOff")
            self._wait_power(resource, conn, system, "Off", timeout)
        else:  # power.reset
            if power == "Off":
                kind = mapping.reset_type("On", allowed)  # a machine that is off just boots
            else:
                kind = mapping.reset_type("ForceRestart" if force else "GracefulRestart", allowed)
            self._reset(resource, conn, system, kind, retries=0)
            self._wait_power(resource, conn, system, "On", timeout)

    def _reset(
        self,
        resource: Resource,
        conn: BmcConnection,
        system: Any,
        kind: str,
        retries: int | None = None,
    ) -> None:
        def post() -> None:
            with conn.errors():
                system.reset_system(sushy.ResetType(kind))

        with_retries(
            post,
            retries=self._context.retries if retries is None else retries,
            what=f"{kind} {resource.address}",
        )

    def _wait_power(
        self, resource: Resource, conn: BmcConnection, system: Any, target: str, timeout: float
    ) -> bool:
        """Poll until the BMC reports `target`; False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        interval = POLL_FIRST
        while True:
            try:
                with conn.errors():
                    system.refresh(force=True)
                power, moving = mapping.power_state(_value(system.power_state))
                if power == target and not moving:
                    return True
            except TemporaryError as exc:
                # A BMC busy with the transition may miss a poll; only the deadline counts.
                log.info("%s: polling power: %s", resource.address, exc)
            if time.monotonic() + interval > deadline:
                log.warning("%s: power is not %s after %.0fs", resource.address, target, timeout)
                return False
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX)

    # -- plumbing ----------------------------------------------------------------------------

    def _bmc(self, resource: Resource) -> Bmc:
        if not is_of(resource, ServerSpec) or resource.spec.bmc.driver is not BmcDriver.REDFISH:
            raise PermanentError(f"{resource.address} is not a Server with a redfish BMC")
        return resource.spec.bmc

    def power(self, resource: Resource, operation: str) -> None:
        """`power.on`, `power.off` or `power.reset` of a Server, waiting for its end."""
        self._power(resource, self._bmc(resource), operation, force=False)

    def attempt(
        self,
        resource: Resource,
        fn: Callable[[BmcConnection], T],
        *,
        what: str,
        retries: int | None = None,
    ) -> T:
        """Run `fn` on the Server's BMC connection, retrying temporary failures."""
        return self._attempt(resource, fn, what=what, retries=retries)

    def _attempt(
        self,
        resource: Resource,
        fn: Callable[[BmcConnection], T],
        *,
        what: str,
        retries: int | None = None,
    ) -> T:
        """Run `fn` on the Server's BMC connection, retrying temporary failures."""
        bmc = self._bmc(resource)

        def once() -> T:
            conn = self._client.connection(bmc)
            try:
                with conn.errors():
                    return fn(conn)
            except ProviderError as exc:
                self._client.note_failure(conn, exc)
                raise

        return with_retries(
            once,
            retries=self._context.retries if retries is None else retries,
            what=f"{what} {resource.address}",
        )


__all__ = ["RedfishProvider"]
