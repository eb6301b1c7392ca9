"""The Provider protocol: the only way the engine talks to live systems.

Providers are found through the `metalform.providers` entry point group, so the engine never
imports one. Which provider handles a resource is its *driver key*: a Server's `bmc.driver`
(`redfish`, `ipmi`); for kinds bound to a Provider resource, that Provider's `type`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol, runtime_checkable

from reconciler.concurrency import Limiter
from reconciler.errors import MetalformError
from reconciler.model import Action, Address, LiveResource, Resource, find
from reconciler.model.providers import ProviderSpec
from reconciler.model.registry import kind
from reconciler.secrets import ResolvedCredential

ENTRY_POINT_GROUP = "metalform.providers"


class Journal(Protocol):
    """Where a provider keeps, across runs, what it did and a live system cannot tell it
    (the image a push staged, the fingerprint of a password it set; never a secret)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The newest entry recorded for `key` (with its `at`, Unix seconds), or None."""
        ...

    def record(self, key: str, **entry: Any) -> None:
        """Keep `entry` for `key`; a failure to keep it is logged, never raised."""
        ...


JournalFactory = Callable[[str], Journal]
"""The journal of a name (`redfish-accounts`, ...)."""


@dataclass
class ProviderContext:
    """What the engine hands a provider: limits, timeouts and a way to get credentials."""

    limiter: Limiter
    credential: Callable[[str], ResolvedCredential]
    """Resolve a Credential by name; raises SecretUnavailable (no value in the message)."""
    timeout: float = 10.0
    """Seconds for one request to a live system."""
    retries: int = 2
    """Extra attempts for a temporary failure."""
    deadline: float | None = None
    """Seconds one resource's read may take, retries included; past it the resource is
    Unreachable (None: the provider's default, a few request timeouts)."""
    operation_timeout: float = 600.0
    """Seconds a long operation (power transition, reboot) may take to be observed."""
    resources: Mapping[Address, Resource] = field(default_factory=dict)
    """The desired resources, e.g. the Provider resource a Service names for its endpoint."""
    extra: dict[str, object] = field(default_factory=dict)
    journals: JournalFactory | None = None
    """Where journals are kept: the server's state store, shared by its replicas; None:
    files in this machine's state directory (see `providers.journal`)."""


@runtime_checkable
class Provider(Protocol):
    """A connection to one kind of live system.

    `read` has no side effects and returns a LiveResource for every resource it was given
    (an unreachable one has health Unreachable and an `error`, it never raises for one
    resource). `execute` performs exactly one planned action and returns the resource read
    back afterwards, which the engine compares with the action's expectation.
    """

    name: ClassVar[str]
    kinds: ClassVar[frozenset[str]]
    operations: ClassVar[frozenset[str]]

    def endpoint(self, resource: Resource) -> str:
        """The endpoint a resource lives on (`redfish:https://10.0.0.5`), for limits."""
        ...

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]: ...

    def execute(self, action: Action, resource: Resource) -> LiveResource: ...

    def close(self) -> None: ...


@runtime_checkable
class Discovering(Protocol):
    """A provider that creates things (containers) and can list those Metalform manages.

    `discover` returns, by address, every live object carrying Metalform's management mark
    within `scope` (the Provider resources of its type), so the planner can delete what Git no
    longer declares and never touches anything unmarked.
    """

    def discover(self, scope: Sequence[Resource]) -> Mapping[Address, LiveResource]: ...


ProviderFactory = Callable[[ProviderContext], Provider]


class UnknownDriver(MetalformError):
    template = "no provider is installed for driver {driver!r} (known: {known})"


def installed_providers() -> dict[str, ProviderFactory]:
    """Provider factories by driver key, from the `metalform.providers` entry points."""
    found: dict[str, ProviderFactory] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def drivers(resource: Resource, resources: Mapping[Address, Resource]) -> list[str]:
    """Every provider that holds part of this resource's live state, primary first.

    The kind's declaration says which (`reconciler.model.registry.Kind.providers_of`): a Server
    is read by its BMC driver and by MAAS when provisioned; an Aggregate or a Service by the
    type of the Provider it names.
    """
    declared = kind(resource.kind)
    if declared is None:
        return []
    return declared.providers_of(resource, lambda name: _provider_type(name, resources))


def _provider_type(name: str, resources: Mapping[Address, Resource]) -> str | None:
    provider = find(resources, f"Provider/{name}", ProviderSpec)
    return str(provider.spec.type.value) if provider is not None else None


def driver_key(
    resource: Resource, resources: Mapping[Address, Resource] | None = None
) -> str | None:
    """The primary provider of a resource, or None for kinds with no live counterpart."""
    keys = drivers(resource, resources or {})
    return keys[0] if keys else None
