"""The IPMI provider: power, boot override and BMC users of Servers whose `bmc.driver` is `ipmi`.

IPMI has no BIOS attributes and pyghmi's LAN settings cover addresses only, so this provider
offers power, boot and account operations (providers.ipmi.accounts); the planner reports a
diagnostic for `bios` and for `bmc.network` on an IPMI server. What is read, per Server:

- `state`: `power` (`On`/`Off`), and the `boot.source` / `boot.mode` an honest reading of the
  boot flags supports (see providers.ipmi.mapping: some keys are omitted when the BMC's answer
  is ambiguous, as OpenIPMI's `ipmi_sim` always makes it after a boot.set other than None),
  `bmc.login` (`current`, or `previous` while a rotation of the Credential is unfinished) and,
  when Git declares accounts, the BMC's users (`bmc.accounts.<name>.role|enabled`, and
  `.password` of a declared one, tested with Set User Password's test operation);
- `facts`: manufacturer and product ids, firmware and IPMI versions, the raw boot override and
  the power restore policy;
- `health`: Degraded when the BMC flags a power fault, Unreachable (with `error`) when it does
  not answer or refuses the credentials.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from providers.base import read_each, with_retries
from providers.ipmi import accounts, mapping
from providers.ipmi.client import BmcTarget, IpmiClient
from reconciler.errors import MetalformError, PermanentError, ProviderError
from reconciler.model import Action, Address, LiveResource, Resource, typed
from reconciler.model.hardware import BmcDriver, BootSource, PowerState, ServerSpec
from reconciler.planners.accounts import LOGIN, effective_blocks
from reconciler.provider import ProviderContext
from reconciler.secrets import REDACTOR

__all__ = ["IpmiProvider"]

T = TypeVar("T")
POLL_INTERVAL = 0.25
"""Seconds between power state reads while waiting for a power operation to take effect."""


class IpmiProvider:
    """Reads and changes Servers through their IPMI BMCs (pyghmi, IPMI 2.0 over LAN)."""

    name: ClassVar[str] = "ipmi"
    kinds: ClassVar[frozenset[str]] = frozenset({"Server"})
    operations: ClassVar[frozenset[str]] = frozenset(
        {"power.on", "power.off", "power.reset", "boot.set"} | accounts.OPERATIONS
    )

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self.client = IpmiClient(timeout=context.timeout, slot=context.limiter.slot)
        self.poll_interval = POLL_INTERVAL

    # -- Provider protocol -----------------------------------------------------------------

    def endpoint(self, resource: Resource) -> str:
        """`ipmi:host:port` of the Server's BMC."""
        host, port = self._address(resource)
        return mapping.endpoint(host, port)

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """Read every Server concurrently; one that fails comes back Unreachable with why."""
        return read_each(resources, self._read_one, parallelism=self.context.limiter.parallelism)

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        """Perform exactly this action, wait for it to show, and return the Server read back."""
        operation = action.operation
        if operation not in self.operations:
            supported = ", ".join(sorted(self.operations))
            raise PermanentError(
                f"the IPMI provider cannot perform {operation!r} on {action.address} "
                f"(IPMI supports {supported})"
            )
        target = self._target(resource)
        just_set: BootSource | None = None
        try:
            if operation in accounts.OPERATIONS:
                target = self._account(resource, target, action)
            elif operation == "boot.set":
                just_set = self._set_boot(target, action.params)
            else:
                self._power(target, operation, action.params, action.address)
        except ValueError as exc:
            raise PermanentError(f"{operation} on {action.address}: {exc}") from None
        return self._read_target(resource, target, just_set)

    def close(self) -> None:
        """Log out of the BMC sessions."""
        self.client.close()

    # -- reading ---------------------------------------------------------------------------

    def read_one(self, resource: Resource) -> LiveResource:
        """Read one Server (raises a ProviderError when it cannot; `metalform import`)."""
        return self._read_target(resource, self._target(resource))

    _read_one = read_one

    def _read_target(
        self, resource: Resource, target: BmcTarget, just_set: BootSource | None = None
    ) -> LiveResource:
        def attempt() -> LiveResource:
            session, login = self.client.logged_in(target)
            status = self.client.chassis_status(session)
            flags = self._optional(lambda: self.client.boot_flags(session))
            device = self._optional(lambda: self.client.device_id(session))
            state = mapping.live_state(status, flags, just_set)
            state.update(self._bmc_state(resource, session, login))
            return LiveResource(
                address=resource.address,
                state=state,
                facts=mapping.live_facts(status, flags, device),
                health=mapping.health(status),
            )

        return with_retries(attempt, retries=self.context.retries, what=f"read {resource.address}")

    def _bmc_state(self, resource: Resource, session: BmcTarget, login: str) -> dict[str, Any]:
        """The login in use and, when Git declares accounts, the BMC's users."""
        state: dict[str, Any] = {LOGIN: login}
        server = typed(resource, ServerSpec)
        declared = effective_blocks(server, self.context.resources).accounts
        if declared is not None:
            secrets: dict[str, str] = {}
            for account in declared:
                if account.username != session.username:
                    with contextlib.suppress(PermanentError):  # the plan names what is missing
                        secrets[account.username] = self._secret(account.credential)
            state.update(accounts.read_users(self.client, session, secrets))
        return state

    @staticmethod
    def _optional(read: Callable[[], T]) -> T | None:
        """A reading some BMCs refuse (boot options, device id): None when refused."""
        try:
            return read()
        except PermanentError:
            return None

    # -- changing --------------------------------------------------------------------------

    def _set_boot(self, target: BmcTarget, params: dict[str, Any]) -> BootSource:
        source, persistent = mapping.boot_request(params)
        device = mapping.PYGHMI_BOOT_DEVICES[source]
        with_retries(
            lambda: self.client.set_boot(target, device, persistent),
            retries=self.context.retries,
            what=f"boot.set on {target.endpoint}",
        )
        return source

    def _account(self, resource: Resource, target: BmcTarget, action: Action) -> BmcTarget:
        """An account action; after a rotation, the new secret must log in before it counts."""
        session, login = self.client.logged_in(target)
        if action.operation == "account.rotate" and login == "current":
            return target  # another action (or an earlier run) rotated it already
        declared = {
            account.username: account.credential
            for account in effective_blocks(
                typed(resource, ServerSpec), self.context.resources
            ).accounts
            or []
        }
        declared[target.username] = target.credential.name

        def secret_of(username: str) -> str:
            if username not in declared:
                raise PermanentError(f"{resource.address}: Git declares no account {username!r}")
            return self._secret(declared[username])

        # Not retried: a password change whose answer was lost may have happened already.
        accounts.execute(action, self.client, session, secret_of)
        if action.operation == "account.rotate":
            self.client.chassis_status(target)  # AuthenticationError if the BMC did not take it
        return target

    def _secret(self, name: str) -> str:
        try:
            return self.context.credential(name).secret.reveal()
        except (MetalformError, LookupError) as exc:
            raise PermanentError(f"credential {name}: {exc}") from None

    def _power(
        self, target: BmcTarget, operation: str, params: dict[str, Any], address: Address
    ) -> None:
        control, want = mapping.power_request(operation, params)
        current = self._power_state(target)
        if control is mapping.ChassisControl.HARD_RESET:
            if current is PowerState.OFF:
                raise PermanentError(
                    f"cannot reset {address}: it is powered off ({target.endpoint})"
                )
            # Not retried: a reset whose answer was lost may have happened already.
            self.client.chassis_control(target, control)
        elif current is not want:
            # Power on/off and soft-off are idempotent: safe to send again after a lost answer.
            with_retries(
                lambda: self.client.chassis_control(target, control),
                retries=self.context.retries,
                what=f"{operation} on {target.endpoint}",
            )
        self._wait_for_power(target, want, operation, address)

    def _power_state(self, target: BmcTarget) -> PowerState:
        return with_retries(
            lambda: self.client.chassis_status(target).power,
            retries=self.context.retries,
            what=f"read power of {target.endpoint}",
        )

    def _wait_for_power(
        self, target: BmcTarget, want: PowerState, operation: str, address: Address
    ) -> None:
        timeout = self.context.operation_timeout
        deadline = time.monotonic() + timeout
        seen: PowerState | None = None
        last_error: ProviderError | None = None
        while True:
            try:
                seen = self.client.chassis_status(target).power
                last_error = None
                if seen is want:
                    return
            except ProviderError as exc:
                # A BMC may stop answering for a moment while the host changes state.
                if not exc.temporary:
                    raise
                last_error = exc
            if time.monotonic() + self.poll_interval > deadline:
                break
            time.sleep(self.poll_interval)
        now = f"is still {seen.value}" if seen is not None else "could not be read"
        cause = f" (last error: {last_error})" if last_error is not None else ""
        raise PermanentError(
            f"after {operation}, {address} {now} {timeout:g}s later, expected {want.value}{cause}"
        )

    # -- resources -------------------------------------------------------------------------

    @staticmethod
    def _address(resource: Resource) -> tuple[str, int]:
        bmc = typed(resource, ServerSpec).spec.bmc
        if bmc.driver is not BmcDriver.IPMI:
            raise PermanentError(f"{resource.address} has bmc.driver {bmc.driver.value}, not ipmi")
        try:
            return mapping.parse_address(bmc.address)
        except ValueError as exc:
            raise PermanentError(f"{resource.address} bmc.address: {exc}") from None

    def _target(self, resource: Resource) -> BmcTarget:
        host, port = self._address(resource)
        name = typed(resource, ServerSpec).spec.bmc.credential
        try:
            credential = self.context.credential(name)
        except (MetalformError, LookupError) as exc:
            # A missing secret or an unknown Credential: one clear line, no secret in it.
            raise PermanentError(f"{resource.address}: credential {name}: {exc}") from None
        if credential.username is None:
            raise PermanentError(
                f"{resource.address}: credential {name} has no username; "
                "IPMI needs a basic credential"
            )
        # Resolving registers the secret already; a context built by hand may not have.
        REDACTOR.add(credential.secret.reveal())
        return BmcTarget(host=host, port=port, credential=credential)
