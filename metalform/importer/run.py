"""The `metalform import` command: probe, build documents, write what is new, report."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metalform.importer import documents as docs
from metalform.importer.bmc import BmcProber, Failure, Probe, probe_all
from metalform.importer.documents import Found
from metalform.importer.output import addresses_in, check_writable, report_written, write_new
from metalform.importer.ranges import expand
from reconciler.bios import template_chain
from reconciler.concurrency import Limiter
from reconciler.engine import CredentialResolver
from reconciler.errors import MetalformError
from reconciler.load import DesiredState, load
from reconciler.model import Resource, address_of
from reconciler.model.base import NAME_MAX
from reconciler.provider import ProviderContext

Say = Callable[[str], None]


@dataclass
class ImportOptions:
    source: str
    """`redfish` or `ipmi`."""
    range: str
    credential: str
    directory: Path = Path(".")
    out: Path | None = None
    name: str = "{hostname}"
    labels: dict[str, str] = field(default_factory=dict)
    split: str = "kind"
    parallelism: int = 64
    per_endpoint: int = 4
    timeout: float = 3.0
    force: bool = False
    probe: Probe | None = None


@dataclass
class ImportResult:
    found: list[Found]
    failures: list[Failure]
    names: dict[int, str]
    """Server name by index in `found`."""
    written: dict[Path, int]
    skipped: list[str]
    new: list[str]
    seconds: float
    probed: int


def check_credential(state: DesiredState, name: str, directory: Path) -> CredentialResolver:
    """The resolver, once `name` is a Credential of the repository whose secret is set."""
    if address_of("Credential", name) not in state.resources:
        known = sorted(r.name for r in state.resources.values() if r.kind == "Credential")
        raise MetalformError(
            f"--credential {name!r}: no Credential of that name in {directory} "
            f"(known: {', '.join(known) or 'none'})"
        )
    resolver = CredentialResolver(state.resources, directory)
    resolver(name)  # a secret that is not set fails here, before any BMC is asked
    return resolver


def _names(found: Sequence[Found], pattern: str) -> dict[int, str]:
    """Names from the pattern; a name two systems share gets -2, -3, ... in probe order."""
    names: dict[int, str] = {}
    used: Counter[str] = Counter()
    for index, system in enumerate(found):
        name = docs.server_name(pattern, system)
        used[name] += 1
        if used[name] > 1:
            name = docs.slug(f"{name[: NAME_MAX - 4]}-{used[name]}")
        names[index] = name
    return names


def _effective_template(name: str, resources: Mapping[str, Resource]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for template in template_chain(name, resources):
        attributes.update(template.spec.attributes)
    return attributes


def build(
    found: Sequence[Found],
    names: Mapping[int, str],
    options: ImportOptions,
    resources: Mapping[str, Resource],
) -> list[dict[str, Any]]:
    """Templates (one per model with BIOS) then Servers, existing or not (filtered later)."""
    probe = options.probe or Probe(credential=options.credential)
    groups: dict[str, list[int]] = {}
    for index, system in enumerate(found):
        if system.bios:
            groups.setdefault(docs.template_name(system), []).append(index)
    out: list[dict[str, Any]] = []
    template_of: dict[int, tuple[str, dict[str, Any]]] = {}
    for tname, members in sorted(groups.items()):
        # Always listed, so that one the repository has shows as skipped; its values are
        # the ones the Servers then differ from.
        document = docs.template_document(tname, [found[i] for i in members], {})
        out.append(document)
        attributes = document["spec"]["attributes"]
        if address_of("BiosTemplate", tname) in resources:
            attributes = _effective_template(tname, resources)
        for index in members:
            template_of[index] = (tname, attributes)
    for index, system in enumerate(found):
        chosen: str | None = None
        shared: dict[str, Any] = {}
        if index in template_of:
            chosen, shared = template_of[index]
        out.append(
            docs.server_document(
                names[index],
                system,
                credential=options.credential,
                insecure=probe.insecure,
                labels=options.labels,
                template=chosen,
                template_attributes=shared,
            )
        )
    return out


def run_import(options: ImportOptions) -> ImportResult:
    """Check every input, probe the range, write what is new; raises on bad input."""
    docs.check_pattern(options.name)
    addresses = expand(options.range, force=options.force)
    state = load(options.directory)
    resolver = check_credential(state, options.credential, options.directory)
    out = options.out or options.directory
    check_writable(out)
    started = time.monotonic()
    context = ProviderContext(
        limiter=Limiter(options.parallelism, options.per_endpoint),
        credential=resolver,
        timeout=options.timeout,
        retries=0,  # a dead address is reported, not waited for again
        resources=state.resources,
    )
    prober = BmcProber(context, options.probe or Probe(credential=options.credential))
    try:
        if options.source == "redfish":
            found, failures = prober.redfish_all(addresses, options.parallelism)
        else:
            found, failures = probe_all(addresses, prober.ipmi_one, options.parallelism)
    finally:
        prober.close()
    names = _names(found, options.name)
    existing = set(state.resources) | addresses_in(out)
    documents = build(found, names, options, state.resources)
    new, skipped, written = write_new(documents, existing, out, options.directory, options.split)
    return ImportResult(
        found=found,
        failures=failures,
        names=names,
        written=written,
        skipped=skipped,
        new=new,
        seconds=time.monotonic() - started,
        probed=len(addresses),
    )


def report(result: ImportResult, say: Say) -> None:
    """How many answered and with what models, every address that did not, what was written."""
    answering = {f.address for f in result.found}
    say(
        f"Probed {result.probed} address(es) in {result.seconds:.1f}s: {len(result.found)} "
        f"system(s) at {len(answering)} address(es) answered, "
        f"{len(result.failures)} address(es) did not."
    )
    models = Counter(docs.model_of(f) for f in result.found)
    for model, count in sorted(models.items()):
        say(f"  {count} x {model}")
    if result.failures:
        say("Did not answer:")
        for failure in result.failures:
            say(f"  {failure.address}: {failure.reason}")
    report_written(result.skipped, result.new, result.written, say)
