"""Health checks after a resource's actions (`spec.checks`): each must pass within its timeout.

A check is retried until it passes or its timeout runs out: a host that just rebooted takes a
while to answer. The network checks (tcp, http, ssh) open a connection themselves; maasStatus
reads the machine through the resource's MAAS provider, and novaCompute asks a provider that
implements `HealthChecking` for it. Nothing here raises for a failing check: it says why.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol, runtime_checkable

from reconciler.model import Address, Resource
from reconciler.model.base import is_of
from reconciler.model.checks import (
    Check,
    HttpCheck,
    MaasStatusCheck,
    ManagedSpec,
    NovaComputeCheck,
    SshCheck,
    TcpCheck,
)
from reconciler.model.providers import ProviderSpec, ProviderType
from reconciler.provider import Provider
from reconciler.secrets import REDACTOR

POLL_SECONDS = 0.5
"""Pause between two attempts of a failing check."""
ATTEMPT_SECONDS = 5.0
"""At most this long for one attempt (connect, request), within the check's timeout."""


@runtime_checkable
class HealthChecking(Protocol):
    """A provider that can run a check of a system it talks to (novaCompute on OpenStack)."""

    def check_health(self, check: Check, resource: Resource) -> str | None:
        """None when the check passes, else why it does not."""
        ...


PROVIDER_TYPES: dict[type, ProviderType] = {NovaComputeCheck: ProviderType.OPENSTACK}
"""The checks that need a provider of the apply beyond the resource's own, by Provider type."""


def _provider_types(resource: Resource) -> set[ProviderType]:
    if not is_of(resource, ManagedSpec):
        return set()
    return {PROVIDER_TYPES[type(c)] for c in resource.spec.checks if type(c) in PROVIDER_TYPES}


def check_drivers(resources: Iterable[Resource]) -> set[str]:
    """The drivers (the Provider type's name) the checks of `resources` are run with."""
    return {t.value for r in resources for t in _provider_types(r)}


def check_providers(resource: Resource, resources: Mapping[Address, Resource]) -> set[Address]:
    """The Provider resources the checks of `resource` talk to (novaCompute: every openstack
    Provider), which the plan carries for the apply as it carries what a resource refers to."""
    wanted = _provider_types(resource)
    if not wanted:
        return set()
    return {
        r.address for r in resources.values() if is_of(r, ProviderSpec) and r.spec.type in wanted
    }


def describe(check: Check) -> str:
    """`tcp 10.0.0.5:22`, for messages."""
    if isinstance(check, TcpCheck):
        return f"tcp {check.tcp}"
    if isinstance(check, HttpCheck):
        return f"http {check.http} (status {check.status})"
    if isinstance(check, SshCheck):
        return f"ssh {check.ssh}"
    if isinstance(check, NovaComputeCheck):
        return f"novaCompute {check.nova_compute}"
    return f"maasStatus {check.maas_status}"


def _host_port(value: str, default_port: int) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host.strip("[]"), int(port)
    return value, default_port


def _tcp(address: str, default_port: int, timeout: float) -> socket.socket:
    host, port = _host_port(address, default_port)
    return socket.create_connection((host, port), timeout=timeout)


def tcp_check(check: TcpCheck, timeout: float) -> str | None:
    try:
        _tcp(check.tcp, 0, timeout).close()
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    return None


def ssh_check(check: SshCheck, timeout: float) -> str | None:
    """An SSH server greets first with `SSH-2.0-...`: reading it needs no credentials."""
    try:
        with _tcp(check.ssh, 22, timeout) as conn:
            banner = conn.recv(256)
    except OSError as exc:
        return f"no SSH server: {exc.strerror or exc}"
    if not banner.startswith(b"SSH-"):
        return "the server at that address does not speak SSH"
    return None


def http_check(check: HttpCheck, timeout: float) -> str | None:
    # Straight to the host: a health check must not pass or fail because of a proxy.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(check.http, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return f"no answer: {getattr(exc, 'reason', exc)}"
    if status != check.status:
        return f"status {status}, expected {check.status}"
    return None


class CheckRunner:
    """Runs the checks of resources with the apply's providers."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        resources: Mapping[str, Resource],
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = providers
        self.resources = resources
        self.sleep = sleep
        self.clock = clock

    def attempt(self, check: Check, resource: Resource, timeout: float) -> str | None:
        """One try of `check`: None when it passes, else why not."""
        if isinstance(check, TcpCheck):
            return tcp_check(check, timeout)
        if isinstance(check, SshCheck):
            return ssh_check(check, timeout)
        if isinstance(check, HttpCheck):
            return http_check(check, timeout)
        if isinstance(check, MaasStatusCheck):
            return self._maas_status(check, resource)
        for provider in self.providers.values():
            if isinstance(provider, HealthChecking):
                return provider.check_health(check, resource)
        return "no provider of this apply can run it (an OpenStack provider is needed)"

    def _maas_status(self, check: MaasStatusCheck, resource: Resource) -> str | None:
        provider = self.providers.get("maas")
        if provider is None:
            return "no MAAS provider in this apply"
        live = provider.read([resource]).get(resource.address)
        if live is None or not live.reachable:
            return f"MAAS did not answer: {live.error if live else 'no answer'}"
        status = live.state.get("provisioning.state")
        if status != check.maas_status:
            return f"MAAS status is {status}, expected {check.maas_status}"
        return None

    def run(self, check: Check, resource: Resource) -> str | None:
        """Try `check` until it passes or its timeout runs out; None, or the last failure."""
        deadline = self.clock() + check.seconds
        while True:
            left = deadline - self.clock()
            why = self.attempt(check, resource, max(0.05, min(ATTEMPT_SECONDS, left)))
            if why is None:
                return None
            left = deadline - self.clock()
            if left <= 0:
                return REDACTOR(f"{describe(check)}: {why} (for {check.timeout})")
            self.sleep(min(POLL_SECONDS, left))  # one last try when the timeout runs out

    def failures(self, resource: Resource) -> list[str]:
        """Why each of the resource's checks failed, in declaration order; [] when all pass."""
        spec = resource.spec
        if not isinstance(spec, ManagedSpec):
            return []
        found = []
        for check in spec.checks:
            why = self.run(check, resource)
            if why is not None:
                found.append(why)
        return found
