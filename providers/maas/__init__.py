"""The MAAS provider: the provisioning part of Servers that have a `provisioning` block.

Live state (merged by gather with the BMC provider's part of the same Server):
- `state`: `provisioning.state` (MAAS status as one word: Ready, Deployed, Commissioning,
  Deploying, Releasing, New, FailedDeployment, ...), `provisioning.tags` (sorted),
  and, for a machine carrying an image, `provisioning.distroSeries` and
  `provisioning.userDataHash` (sha256 of the user data Metalform deployed);
- `facts`: `provisioning.systemId`, `provisioning.statusMessage`.
Machines are matched to Servers by hostname (`spec.hostname`, default the Server's name); all
machines of one MAAS are read in one request.

Operations: `provisioning.commission`, `provisioning.deploy` {distroSeries, userData,
userDataHash}, `provisioning.release`, `provisioning.tags` {add, remove}. Each waits (up to the
operation timeout) for MAAS to reach the target state and fails with MAAS's status message.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from providers.base import with_retries
from providers.maas import mapping
from providers.maas.client import ApiKey, MaasClient, endpoint_of
from reconciler.errors import MetalformError, PermanentError, ProviderError, TemporaryError
from reconciler.model import Action, Address, LiveResource, Resource, find, typed
from reconciler.model.hardware import Provisioning, ServerSpec
from reconciler.model.live import unreachable
from reconciler.model.providers import ProviderSpec
from reconciler.provider import ProviderContext

log = logging.getLogger("metalform.providers.maas")
T = TypeVar("T")

POLL_FIRST = 0.1
POLL_MAX = 2.0

# What each operation waits for, and the word its failure message uses.
_TARGETS = {
    "provisioning.commission": ("Ready", "commissioning"),
    "provisioning.deploy": ("Deployed", "deployment"),
    "provisioning.release": ("Ready", "release"),
    "provisioning.wait:Deployed": ("Deployed", "deployment"),
    "provisioning.wait:Ready": ("Ready", "the MAAS transition"),
}


def hostname_of(resource: Resource) -> str:
    """The name MAAS knows a Server by."""
    return typed(resource, ServerSpec).spec.hostname or resource.name


def provisioning_of(resource: Resource) -> Provisioning:
    """The Server's provisioning block: MAAS reads and drives only Servers that declare one."""
    provisioning = typed(resource, ServerSpec).spec.provisioning
    if provisioning is None:
        raise PermanentError(f"{resource.address} has no provisioning block")
    return provisioning


class MaasProvider:
    """Reads and drives the MAAS machines of provisioned Servers."""

    name: ClassVar[str] = "maas"
    kinds: ClassVar[frozenset[str]] = frozenset({"Server"})
    operations: ClassVar[frozenset[str]] = frozenset(
        {
            "provisioning.commission",
            "provisioning.deploy",
            "provisioning.release",
            "provisioning.tags",
            "provisioning.wait",
        }
    )

    def __init__(self, context: ProviderContext) -> None:
        self._context = context
        self._clients: dict[str, MaasClient] = {}
        self._lock = threading.Lock()

    # -- Provider protocol -------------------------------------------------------------------

    def endpoint(self, resource: Resource) -> str:
        """`maas:` + the region's scheme://host:port."""
        return endpoint_of(self._provider_spec(resource).url)

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """Read every Server's machine: one `machines/` request per MAAS region."""
        groups: dict[str, list[Resource]] = defaultdict(list)
        for resource in resources:
            groups[provisioning_of(resource).provider].append(resource)
        out: dict[Address, LiveResource] = {}
        for provider_name, batch in sorted(groups.items()):
            try:
                client = self._client(provider_name)
                machines = self._retry(client.machines, what=f"list machines of {client.url}")
            except MetalformError as exc:
                for resource in batch:
                    out[resource.address] = unreachable(resource.address, str(exc))
                continue
            by_hostname = {str(m.get("hostname")): m for m in machines}
            for resource in batch:
                out[resource.address] = self._live(
                    resource, by_hostname.get(hostname_of(resource)), client.url
                )
        return out

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        """Perform one action, wait for MAAS to settle, return the Server's machine read back."""
        operation = action.operation
        if operation not in self.operations:
            raise PermanentError(f"the maas provider cannot perform {operation!r}")
        client = self._client(provisioning_of(resource).provider)
        system_id = self._system_id(client, resource)
        params = action.params
        if operation == "provisioning.tags":
            self._tags(client, system_id, params)
        elif operation == "provisioning.wait":
            # A transition an earlier apply started (it died): wait for it, start nothing.
            key = f"{operation}:{params.get('until')}"
            if key not in _TARGETS:
                raise PermanentError("provisioning.wait needs params.until: Deployed or Ready")
            self._wait(client, resource, system_id, key)
        else:
            if operation == "provisioning.deploy":
                digest = params.get("userDataHash")
                machine = self._retry(lambda: client.machine(system_id), what="read machine")
                # Recorded before deploying: MAAS never gives user data back.
                description = mapping.description_with_hash(
                    str(machine.get("description") or ""), digest
                )
                self._retry(
                    lambda: client.set_description(system_id, description),
                    what="record user data digest",
                )
                # A POST that starts a transition is not retried: a lost answer after MAAS
                # accepted it would make the retry fail on the machine's new state.
                client.deploy(
                    system_id,
                    user_data=params.get("userData"),
                    distro_series=params.get("distroSeries"),
                )
            else:
                client.machine_op(system_id, operation.split(".", 1)[1])
            self._wait(client, resource, system_id, operation)
        return self._read_one(client, resource)

    def close(self) -> None:
        """Close the HTTP sessions."""
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # -- helpers -----------------------------------------------------------------------------

    def _live(
        self, resource: Resource, machine: Mapping[str, Any] | None, url: str
    ) -> LiveResource:
        if machine is None:
            return LiveResource(
                address=resource.address,
                facts={
                    mapping.MISSING: f"{url} has no machine with hostname {hostname_of(resource)!r}"
                },
            )
        state, facts, health = mapping.machine_state(machine)
        return LiveResource(address=resource.address, state=state, facts=facts, health=health)

    def _read_one(self, client: MaasClient, resource: Resource) -> LiveResource:
        """One Server's machine, found by MAAS's hostname filter (not a listing of all)."""
        hostname = hostname_of(resource)
        machines = self._retry(
            functools.partial(client.machines, [hostname]),
            what=f"read machine {hostname} of {client.url}",
        )
        found = {str(m.get("hostname")): m for m in machines}
        return self._live(resource, found.get(hostname), client.url)

    def _system_id(self, client: MaasClient, resource: Resource) -> str:
        live = self._read_one(client, resource)
        missing = live.facts.get(mapping.MISSING)
        if missing:
            raise PermanentError(f"{resource.address}: {missing}")
        return str(live.facts[mapping.SYSTEM_ID])

    def _tags(self, client: MaasClient, system_id: str, params: Mapping[str, Any]) -> None:
        add = [str(t) for t in params.get("add", [])]
        remove = [str(t) for t in params.get("remove", [])]
        existing = set(self._retry(client.tags, what="list tags"))
        for tag in add:
            if tag not in existing:
                try:
                    self._retry(functools.partial(client.create_tag, tag), what=f"create tag {tag}")
                except ProviderError:
                    # Several machines tagged at once race to create the same tag: if it
                    # exists now, someone else created it, which is all this needed.
                    if tag not in self._retry(client.tags, what="list tags"):
                        raise
            self._retry(
                functools.partial(client.update_tag_nodes, tag, add=[system_id]), what=f"tag {tag}"
            )
        for tag in remove:
            if tag in existing:
                self._retry(
                    functools.partial(client.update_tag_nodes, tag, remove=[system_id]),
                    what=f"untag {tag}",
                )

    def _wait(self, client: MaasClient, resource: Resource, system_id: str, operation: str) -> None:
        target, word = _TARGETS[operation]
        timeout = self._context.operation_timeout
        deadline = time.monotonic() + timeout
        interval = POLL_FIRST
        while True:
            try:
                machine = client.machine(system_id)
                state = mapping.state_name(str(machine.get("status_name", "")))
                if state == target:
                    return
                if state.startswith("Failed"):
                    message = machine.get("status_message") or state
                    raise PermanentError(f"{resource.address}: {word} failed: {message}")
            except TemporaryError as exc:
                # A region busy with the transition may miss a poll; only the deadline counts.
                log.info("%s: polling MAAS: %s", resource.address, exc)
            if time.monotonic() + interval > deadline:
                raise PermanentError(
                    f"{resource.address}: {word} did not finish within {timeout:.0f}s"
                )
            time.sleep(interval)
            interval = min(interval * 1.5, POLL_MAX)

    def _provider_spec(self, resource: Resource) -> ProviderSpec:
        return self._provider_resource(provisioning_of(resource).provider).spec

    def _provider_resource(self, name: str) -> Resource[ProviderSpec]:
        provider = find(self._context.resources, f"Provider/{name}", ProviderSpec)
        if provider is None or provider.spec.type.value != "maas":
            raise PermanentError(f"Provider/{name} is not a Provider of type maas")
        return provider

    def client(self, provider_name: str) -> MaasClient:
        """The client of one Provider of type maas (shared; closed with the provider)."""
        return self._client(provider_name)

    def _client(self, provider_name: str) -> MaasClient:
        with self._lock:
            client = self._clients.get(provider_name)
            if client is not None:
                return client
            spec = self._provider_resource(provider_name).spec
            if not spec.credential:
                raise PermanentError(
                    f"Provider/{provider_name} needs a credential "
                    "(a token Credential holding the MAAS API key)"
                )
            resolved = self._context.credential(spec.credential)
            key = ApiKey.parse(resolved.secret.reveal())
            client = MaasClient(
                spec.url,
                key,
                credential=spec.credential,
                limiter=self._context.limiter,
                timeout=min(spec.timeout, self._context.timeout),
                verify_tls=spec.verify_tls,
            )
            self._clients[provider_name] = client
            return client

    def _retry(self, fn: Callable[[], T], *, what: str) -> T:
        return with_retries(fn, retries=self._context.retries, what=what)


__all__ = ["MaasProvider"]
