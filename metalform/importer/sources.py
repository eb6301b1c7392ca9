"""`metalform import maas|openstack|docker PROVIDER`: read what a Provider holds, write it.

Each source reads through its provider's own client (`from_maas`, `from_openstack`,
`from_docker`) and returns documents and notes; writing is the BMC import's: documents
already in the repository (or in --out) win and are listed as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from metalform.importer.collected import Collected, Collector, SourceOptions
from metalform.importer.output import addresses_in, check_writable, report_written, write_new
from reconciler.concurrency import Limiter
from reconciler.engine import CredentialResolver
from reconciler.errors import MetalformError
from reconciler.load import DesiredState, load
from reconciler.model import Resource, address_of, find
from reconciler.model.providers import ProviderSpec
from reconciler.provider import ProviderContext

Say = Callable[[str], None]
SOURCES = ("maas", "openstack", "docker")


@dataclass
class SourceResult:
    collected: Collected
    new: list[str]
    skipped: list[str]
    written: dict[Path, int]
    seconds: float


def provider_of(
    state: DesiredState, name: str, source: str, directory: Path
) -> Resource[ProviderSpec]:
    """The Provider `name` of the repository, once it is of the source's type."""
    provider = find(state.resources, address_of("Provider", name), ProviderSpec)
    if provider is None:
        known = sorted(
            f"{r.name} ({r.spec.type.value})" for r in state.of_kind("Provider", ProviderSpec)
        )
        raise MetalformError(
            f"PROVIDER {name!r}: no Provider of that name in {directory} "
            f"(known: {', '.join(known) or 'none'})"
        )
    if provider.spec.type.value != source:
        raise MetalformError(
            f"PROVIDER {name!r} is of type {provider.spec.type.value}, not {source} "
            f"(defined at {provider.location or provider.address})"
        )
    return provider


def _collector(source: str) -> Collector:
    # Imported on use: each source pulls in its provider's client library.
    if source == "maas":
        from metalform.importer.from_maas import collect as maas

        return maas
    if source == "openstack":
        from metalform.importer.from_openstack import collect as openstack

        return openstack
    from metalform.importer.from_docker import collect as docker

    return docker


def run_source_import(options: SourceOptions) -> SourceResult:
    """Check every input, read the Provider, write what is new; raises on bad input."""
    if options.source not in SOURCES:
        raise MetalformError(f"unknown source {options.source!r} (known: {', '.join(SOURCES)})")
    state = load(options.directory)
    provider = provider_of(state, options.provider, options.source, options.directory)
    resolver = CredentialResolver(state.resources, options.directory)
    credential = options.credential
    if options.source == "maas" and credential is None:
        raise MetalformError(
            "import maas needs --credential NAME: the Credential the BMCs of the Servers it "
            "writes log in with (MAAS's own BMC passwords are never written)"
        )
    if credential is not None and address_of("Credential", credential) not in state.resources:
        raise MetalformError(
            f"--credential {credential!r}: no Credential of that name in {options.directory}"
        )
    out = options.out or options.directory
    check_writable(out)
    started = time.monotonic()
    context = ProviderContext(
        limiter=Limiter(options.parallelism, options.per_endpoint),
        credential=resolver,
        timeout=options.timeout,
        retries=1,
        resources=state.resources,
    )
    collected = _collector(options.source)(provider, context, options, state)
    existing = set(state.resources) | addresses_in(out)
    new, skipped, written = write_new(
        collected.documents, existing, out, options.directory, options.split
    )
    return SourceResult(collected, new, skipped, written, time.monotonic() - started)


def report_source(result: SourceResult, say: Say) -> None:
    """What was read, what could not be imported and why, what was skipped and written."""
    collected = result.collected
    say(
        f"Read {collected.found} {collected.what} in {result.seconds:.1f}s: "
        f"{len(collected.documents)} document(s) found."
    )
    if collected.notes:
        say("Left out, or to do before planning:")
        for note in collected.notes:
            say(f"  {note}")
    report_written(result.skipped, result.new, result.written, say)
