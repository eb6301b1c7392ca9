"""OpenStack clouds: Nova host aggregates (Aggregate resources) and novaCompute health checks.

One `OpenStackProvider` serves every Provider resource of type openstack; each gets one
reused connection (`Cloud`) to its compute endpoint (`url`). Reading costs three listings
per cloud, whatever the number of Aggregates: every aggregate, the compute services (the hosts
Nova knows) and the hypervisors with their servers (how many instances each host runs).
An aggregate Metalform creates carries the metadata `metalform:managed=true`; discovery lists
those, so one Git no longer declares is planned for deletion. Aggregates made by anyone else
are never deleted. An `aggregate.add_host` with `awaitCompute` (a host MAAS deployed in the same
apply) first waits, up to the operation timeout, for the host's nova-compute to register.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from providers.base import with_retries
from providers.openstack.client import Cloud, HostNotFound
from providers.openstack.mapping import is_managed, live_resource, service_condition
from reconciler.errors import PermanentError, ProviderError
from reconciler.model import Action, Address, LiveResource, Resource, find, typed
from reconciler.model.base import is_of
from reconciler.model.checks import Check, NovaComputeCheck
from reconciler.model.live import unreachable
from reconciler.model.openstack import AggregateSpec
from reconciler.model.providers import ProviderSpec, ProviderType
from reconciler.planners.aggregate import AZ, MANAGED_KEY, desired_hosts
from reconciler.provider import ProviderContext
from reconciler.secrets import REDACTOR

OPERATIONS = frozenset(
    {
        "aggregate.create",
        "aggregate.delete",
        "aggregate.set_availability_zone",
        "aggregate.set_metadata",
        "aggregate.add_host",
        "aggregate.remove_host",
    }
)

__all__ = ["OPERATIONS", "OpenStackProvider"]

log = logging.getLogger("metalform.providers.openstack")

LISTING_REUSE_SECONDS = 5.0
"""A plan reads then discovers at once: discovery reuses read's listings of a cloud if they are
this fresh, so a plan still costs three listings per cloud."""

AWAIT_FIRST = 0.5
AWAIT_MAX = 10.0
"""Seconds between looks for a host that MAAS just deployed, growing from first to max."""


class OpenStackProvider:
    """Host aggregates on OpenStack clouds (see the module docstring)."""

    name: ClassVar[str] = "openstack"
    kinds: ClassVar[frozenset[str]] = frozenset({"Aggregate"})
    operations: ClassVar[frozenset[str]] = OPERATIONS

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self._clouds: dict[str, Cloud] = {}
        self._lock = threading.Lock()
        self._listings: dict[str, tuple[float, list[dict[str, Any]], dict[str, int | None]]] = {}

    # -- connections -------------------------------------------------------------------------

    def _provider_resource(self, aggregate: Resource) -> Resource[ProviderSpec]:
        name = typed(aggregate, AggregateSpec).spec.provider
        provider = find(self.context.resources, f"Provider/{name}", ProviderSpec)
        if provider is None:
            raise PermanentError(f"Provider/{name} of {aggregate.address} is not defined")
        return provider

    def cloud(self, provider: Resource[ProviderSpec]) -> Cloud:
        """The connection of one Provider resource (one for the provider's lifetime)."""
        with self._lock:
            cloud = self._clouds.get(provider.name)
            if cloud is None:
                spec = provider.spec
                credential = self.context.credential(spec.credential) if spec.credential else None
                timeout = spec.timeout if "timeout" in spec.model_fields_set else None
                cloud = Cloud(
                    spec.url,
                    self.context.limiter,
                    timeout or self.context.timeout,
                    project=spec.project,
                    region=spec.region,
                    verify=spec.verify_tls,
                    credential=credential,
                )
                self._clouds[provider.name] = cloud
            return cloud

    def endpoint(self, resource: Resource) -> str:
        if resource.kind == "Provider":
            return f"openstack:{typed(resource, ProviderSpec).spec.url.rstrip('/')}"
        name = typed(resource, AggregateSpec).spec.provider
        provider = find(self.context.resources, f"Provider/{name}", ProviderSpec)
        if provider is None:
            return "openstack:"
        return f"openstack:{provider.spec.url.rstrip('/')}"

    def _retried(self, what: str, fn: Any) -> Any:
        return with_retries(fn, retries=self.context.retries, what=what)

    # -- reading -----------------------------------------------------------------------------

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """Every Aggregate, grouped by cloud: three listings per cloud."""
        out: dict[Address, LiveResource] = {}
        by_cloud: dict[str, tuple[Cloud, list[Resource[AggregateSpec]]]] = {}
        for aggregate in (typed(r, AggregateSpec) for r in resources):
            try:
                cloud = self.cloud(self._provider_resource(aggregate))
            except ProviderError as exc:
                out[aggregate.address] = unreachable(aggregate.address, REDACTOR(str(exc)))
                continue
            by_cloud.setdefault(cloud.url, (cloud, []))[1].append(aggregate)
        for cloud, members in by_cloud.values():
            out.update(self._read_on(cloud, members))
        return out

    def _read_on(
        self, cloud: Cloud, aggregates: Sequence[Resource[AggregateSpec]], *, hosts: bool = True
    ) -> dict[Address, LiveResource]:
        try:
            listing = self._retried(f"{cloud.url}: list aggregates", cloud.aggregates)
            counts: dict[str, int | None] | None = (
                self._retried(f"{cloud.url}: list hypervisors", cloud.compute_hosts)
                if hosts
                else None
            )
        except ProviderError as exc:
            message = REDACTOR(str(exc))
            return {a.address: unreachable(a.address, message) for a in aggregates}
        if counts is not None:
            with self._lock:
                self._listings[cloud.url] = (time.monotonic(), listing, counts)
        by_name = {str(a["name"]): a for a in listing}
        return {
            a.address: live_resource(
                a.address,
                by_name.get(a.name),
                cloud=cloud.url,
                aggregates=listing,
                desired_hosts=desired_hosts(a, self.context.resources) or (),
                instances=counts,
                compute_hosts=sorted(counts) if counts is not None else None,
            )
            for a in aggregates
        }

    def discover(self, scope: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """The aggregates Metalform created on the clouds of these Provider resources.

        A cloud that does not answer contributes nothing: no deletion is planned on a guess.
        """
        found: dict[Address, LiveResource] = {}
        for provider in scope:
            cloud = self.cloud(typed(provider, ProviderSpec))
            try:
                listing, counts = self._listings_of(cloud)
            except ProviderError:
                continue
            for aggregate in listing:
                if is_managed(aggregate):
                    address = f"Aggregate/{aggregate['name']}"
                    found[address] = live_resource(
                        address,
                        aggregate,
                        cloud=cloud.url,
                        aggregates=listing,
                        instances=counts,
                        provider=provider.name,
                    )
        return found

    def _listings_of(self, cloud: Cloud) -> tuple[list[dict[str, Any]], dict[str, int | None]]:
        with self._lock:
            taken = self._listings.pop(cloud.url, None)
        if taken is not None and time.monotonic() - taken[0] <= LISTING_REUSE_SECONDS:
            return taken[1], taken[2]
        listing = self._retried(f"{cloud.url}: list aggregates", cloud.aggregates)
        if not any(is_managed(a) for a in listing):
            return listing, {}
        counts = self._retried(f"{cloud.url}: list hypervisors", cloud.compute_hosts)
        return listing, counts

    # -- acting ------------------------------------------------------------------------------

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        """Perform exactly `action` on the aggregate; return it read back."""
        operation = action.operation
        if operation not in OPERATIONS:
            raise PermanentError(
                f"operation {operation} is not supported by the openstack provider"
            )
        cloud = self.cloud(self._provider_resource(resource))
        params = action.params
        if operation == "aggregate.create":
            # Not retried: a create that timed out may have happened; the next plan tells.
            created = cloud.create(resource.name, params.get(AZ))
            # The mark that lets a later plan delete it when Git drops it.
            self._retried(
                "mark as managed", lambda: cloud.set_metadata(created["id"], {MANAGED_KEY: "true"})
            )
        else:
            aggregate_id = self._find(cloud, resource)
            if operation == "aggregate.set_availability_zone":
                self._retried("set zone", lambda: cloud.set_zone(aggregate_id, params[AZ]))
            elif operation == "aggregate.delete":
                cloud.delete(aggregate_id)
            elif operation == "aggregate.set_metadata":
                self._retried(
                    "set metadata",
                    lambda: cloud.set_metadata(aggregate_id, dict(params["metadata"])),
                )
            else:
                host = str(params["host"])
                try:
                    if operation == "aggregate.add_host":
                        if params.get("awaitCompute"):
                            self._await_compute(cloud, resource, host)
                        cloud.add_host(aggregate_id, host)
                    else:
                        cloud.remove_host(aggregate_id, host)
                except HostNotFound as exc:
                    raise HostNotFound(
                        f"{operation} {host} on {resource.address}: Nova knows no such "
                        f"compute host, or the aggregate is gone ({exc})"
                    ) from None
        # The read-back needs the aggregate only: no hypervisor listing per action.
        return self._read_on(cloud, [typed(resource, AggregateSpec)], hosts=False)[resource.address]

    def _await_compute(self, cloud: Cloud, aggregate: Resource, host: str) -> None:
        """Wait for a freshly deployed host's nova-compute to register with the cloud."""
        timeout = self.context.operation_timeout
        deadline = time.monotonic() + timeout
        interval = AWAIT_FIRST
        while not self._retried(
            f"{cloud.url}: find compute host {host}", lambda: cloud.has_compute_host(host)
        ):
            if time.monotonic() + interval > deadline:
                raise PermanentError(
                    f"{aggregate.address}: host {host} did not register as a nova-compute "
                    f"host within {timeout:.0f}s; it was not added"
                )
            log.info("%s: waiting for compute host %s to register", aggregate.address, host)
            time.sleep(interval)
            interval = min(interval * 1.5, AWAIT_MAX)

    def _find(self, cloud: Cloud, aggregate: Resource) -> Any:
        listing: list[dict[str, Any]] = self._retried("list aggregates", cloud.aggregates)
        for found in listing:
            if found["name"] == aggregate.name:
                return found["id"]
        raise PermanentError(
            f"{cloud.url} has no aggregate {aggregate.name!r} (deleted since the plan was "
            "made? plan again)"
        )

    # -- health checks -----------------------------------------------------------------------

    def check_health(self, check: Check, resource: Resource) -> str | None:
        """novaCompute: a nova-compute service of the host is up and enabled on a cloud of an
        openstack Provider; None when so, else what each cloud says."""
        if not isinstance(check, NovaComputeCheck):
            return "the openstack provider runs novaCompute checks only"
        host = check.nova_compute
        clouds = [
            r
            for r in self.context.resources.values()
            if is_of(r, ProviderSpec) and r.spec.type is ProviderType.OPENSTACK
        ]
        if not clouds:
            return "no Provider of type openstack is declared"
        said: list[str] = []
        for provider in sorted(clouds, key=lambda r: r.address):
            try:
                cloud = self.cloud(provider)
                services = self._retried(
                    f"{cloud.url}: compute services of {host}",
                    lambda cloud=cloud: cloud.compute_services(host),
                )
            except ProviderError as exc:
                said.append(REDACTOR(str(exc)))
                continue
            if any(s["state"] == "up" and s["status"] == "enabled" for s in services):
                return None
            said.extend(f"{provider.address}: {service_condition(s)}" for s in services)
        return "; ".join(said) or f"no nova-compute service of host {host} is known"

    def close(self) -> None:
        with self._lock:
            for cloud in self._clouds.values():
                cloud.close()
            self._clouds.clear()
