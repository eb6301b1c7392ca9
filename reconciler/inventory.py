"""Inventory sources: systems that describe servers (NetBox, ...) merged into the desired state.

A `Provider` with an `inventory` block names a source by its `type`. Sources are found through
the `metalform.inventory` entry point group (as providers are through `metalform.providers`), so
the engine never imports one. A source turns what it reads into Server resources; the merge
here is the same for every source: Git wins where both define `Server/<name>`, and an imported
Server whose references Git cannot satisfy is dropped with a warning, never planned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol

from reconciler.errors import MetalformError
from reconciler.load import DesiredState
from reconciler.model import Diagnostic, Location, Resource, Severity, address_of
from reconciler.model.credentials import CredentialSpec, CredentialType
from reconciler.model.hardware import ServerSpec
from reconciler.model.providers import ProviderSpec
from reconciler.references import check_references
from reconciler.secrets import ResolvedCredential, Secret

ENTRY_POINT_GROUP = "metalform.inventory"
CredentialResolverFn = Callable[[str], ResolvedCredential]


@dataclass
class Imported:
    """What one Provider's records became: Servers by address, and warnings on the rest."""

    servers: dict[str, Resource[ServerSpec]] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)


class InventorySource(Protocol):
    """Reads one inventory Provider and maps its records to Server resources."""

    def import_servers(self, provider: Resource[ProviderSpec], token: Secret | None) -> Imported:
        """The Servers of `provider`; raises MetalformError when the source cannot be read."""
        ...

    def origin(self, server: Resource[ServerSpec]) -> str:
        """How a warning names where an imported Server came from (`NetBox device 12`)."""
        ...


def warning(
    message: str,
    address: str | None = None,
    *,
    provider: str | None = None,
    field_path: str | None = None,
) -> Diagnostic:
    """A warning located at the inventory Provider."""
    location = Location(file=address_of("Provider", provider)) if provider else None
    return Diagnostic(
        severity=Severity.WARNING,
        message=message,
        address=address,
        field=field_path,
        location=location,
    )


def field_path(loc: Sequence[str | int]) -> str:
    """`('spec', 'bmc', 0)` -> `spec.bmc[0]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def merge_inventory(
    desired: DesiredState,
    imported: Mapping[str, Imported],
    origin: Callable[[Resource[ServerSpec]], str] = lambda r: r.source or "?",
) -> DesiredState:
    """The desired state with the imported Servers added; Git wins on a conflict.

    `imported` is by Provider name, in the order the Providers are read: when two Providers
    import the same Server, the first one wins, with a warning.
    """
    resources = dict(desired.resources)
    warnings = list(desired.warnings)
    added: dict[str, str] = {}
    for provider, result in imported.items():
        warnings.extend(result.diagnostics)
        for address, server in result.servers.items():
            git = desired.resources.get(address)
            if git is not None:
                where = f" at {git.location}" if git.location else ""
                warnings.append(
                    warning(
                        f"defined in Git{where} and by {origin(server)}; "
                        "Git wins, the imported record is ignored",
                        address,
                        provider=provider,
                    )
                )
                continue
            if address in added:
                warnings.append(
                    warning(
                        f"also imported by Provider/{added[address]}, which wins",
                        address,
                        provider=provider,
                    )
                )
                continue
            resources[address] = server
            added[address] = provider
    # An imported Server may name a Credential or BiosTemplate Git lacks: drop it with a
    # warning instead of planning a Server that cannot be reached.
    for problem in check_references(resources):
        if problem.address in added:
            warnings.append(
                warning(
                    f"{problem.message}; not imported",
                    problem.address,
                    provider=added[problem.address],
                    field_path=field_path(problem.path),
                )
            )
            resources.pop(problem.address, None)
    return DesiredState(
        revision=desired.revision, resources=resources, warnings=warnings, locators=desired.locators
    )


def installed_sources() -> dict[str, InventorySource]:
    """The inventory sources installed, by Provider type."""
    return {ep.name: ep.load()() for ep in entry_points(group=ENTRY_POINT_GROUP)}


def inventory_providers(desired: DesiredState) -> list[Resource[ProviderSpec]]:
    """The Providers with an `inventory` block, by name (a stable order for the merge)."""
    return sorted(
        (r for r in desired.of_kind("Provider", ProviderSpec) if r.spec.inventory is not None),
        key=lambda r: r.name,
    )


def _token(
    provider: Resource[ProviderSpec],
    desired: DesiredState,
    credential_resolver: CredentialResolverFn,
) -> Secret | None:
    name = provider.spec.credential
    if name is None:
        return None  # the source may allow anonymous reads
    credential = desired.get("Credential", name, CredentialSpec)
    if credential is not None and credential.spec.type is not CredentialType.TOKEN:
        raise MetalformError(
            f"{provider.address} needs a Credential of type token; "
            f"Credential/{name} is of type {credential.spec.type.value}"
        )
    try:
        return credential_resolver(name).secret
    except MetalformError as exc:
        # The resolver's message says which secret is missing; say which Provider needed it.
        raise MetalformError(f"{provider.address}: {exc}") from None


def import_inventory(
    desired: DesiredState,
    credential_resolver: CredentialResolverFn,
    sources: Mapping[str, InventorySource] | None = None,
) -> DesiredState:
    """Add the Servers of every inventory Provider to `desired` (unchanged when none).

    Raises MetalformError naming the Provider when its source cannot be read: planning without
    part of the fleet would look like the fleet shrank.
    """
    providers = inventory_providers(desired)
    if not providers:
        return desired
    sources = installed_sources() if sources is None else sources
    imported: dict[str, Imported] = {}
    origins: dict[str, InventorySource] = {}
    for provider in providers:
        kind = provider.spec.type.value
        source = sources.get(kind)
        if source is None:
            raise MetalformError(
                f"{provider.address}: no inventory source for type {kind} is installed"
            )
        imported[provider.name] = source.import_servers(
            provider, _token(provider, desired, credential_resolver)
        )
        for address in imported[provider.name].servers:
            origins[address] = source
    return merge_inventory(
        desired, imported, origin=lambda server: origins[server.address].origin(server)
    )
