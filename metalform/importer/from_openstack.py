"""Nova host aggregates -> `Aggregate` documents (hosts, metadata, availability zone).

An aggregate's hosts are Server names in Git. When every host of an aggregate is a Server of
the repository (matched by `spec.hostname`, else name, as the planner matches them) they are
written as `hosts`; otherwise `hosts` is left out, so the Aggregate does not manage its hosts
(a plan then neither adds nor removes any), and the report names the hosts without a Server.
Metalform's own `metalform:` metadata keys and Nova's copy of the zone are not written. The
planner adopts an existing aggregate Git names as it is: an aggregate Metalform did not create
(no `metalform:managed` mark) is updated when Git differs, but never deleted.
"""

from __future__ import annotations

from typing import Any

from metalform.importer.collected import Collected, SourceOptions
from metalform.importer.documents import document, slug
from providers.openstack import OpenStackProvider
from providers.openstack.mapping import AZ_METADATA_KEY
from reconciler.load import DesiredState
from reconciler.model import Resource
from reconciler.model.hardware import ServerSpec
from reconciler.model.openstack import RESERVED_METADATA_PREFIX
from reconciler.model.providers import ProviderSpec
from reconciler.planners.aggregate_state import hostname
from reconciler.provider import ProviderContext


def aggregate_document(
    aggregate: dict[str, Any],
    provider: str,
    servers: dict[str, str],
    labels: dict[str, str],
) -> tuple[dict[str, Any], str | None]:
    """The Aggregate document of one Nova aggregate, and a note if its hosts are left out."""
    name = str(aggregate["name"])
    spec: dict[str, Any] = {"provider": provider}
    zone = aggregate.get("availability_zone")
    if zone:
        spec["availabilityZone"] = zone
    metadata = {
        str(k): str(v)
        for k, v in sorted((aggregate.get("metadata") or {}).items())
        if k != AZ_METADATA_KEY and not str(k).startswith(RESERVED_METADATA_PREFIX)
    }
    if metadata:
        spec["metadata"] = metadata
    hosts = sorted(str(h) for h in aggregate.get("hosts") or [])
    unknown = [h for h in hosts if h not in servers]
    note = None
    if unknown:
        note = (
            f"Aggregate/{name}: host(s) {', '.join(unknown)} have no Server in the repository; "
            "hosts left out (the Aggregate does not manage its hosts until you add them)"
        )
    else:
        spec["hosts"] = sorted(servers[h] for h in hosts)
    return document("Aggregate", name, spec, labels), note


def collect(
    provider: Resource[ProviderSpec],
    context: ProviderContext,
    options: SourceOptions,
    state: DesiredState,
) -> Collected:
    """Every aggregate of the Provider's cloud, in one listing."""
    openstack = OpenStackProvider(context)
    try:
        listing = openstack.cloud(provider).aggregates()
    finally:
        openstack.close()
    servers = {hostname(r): r.name for r in state.of_kind("Server", ServerSpec)}
    documents: list[dict[str, Any]] = []
    notes: list[str] = []
    for aggregate in sorted(listing, key=lambda a: str(a.get("name"))):
        name = str(aggregate.get("name"))
        if slug(name) != name:
            notes.append(
                f"aggregate {name!r}: not a valid resource name (lowercase letters, digits, "
                "'.', '-'); Metalform cannot manage it under another name, so it is skipped"
            )
            continue
        written, note = aggregate_document(aggregate, provider.name, servers, options.labels)
        documents.append(written)
        if note:
            notes.append(note)
    return Collected(documents, len(listing), "aggregate(s)", notes)
