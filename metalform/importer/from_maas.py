"""MAAS machines -> `Server` documents with their `provisioning` block.

A Server needs its BMC, so a machine becomes a Server only when MAAS knows its BMC (its power
parameters: type `redfish` or `ipmi` and an address); its BMC logs in with the Credential of
`--credential`, never with the password MAAS holds, which is not read further. A machine whose
Server the repository has (matched by hostname, as the MAAS provider matches them) is skipped:
import never merges a provisioning block into a Server of Git. Only the states a Server can
declare (Ready, Deployed) are written; for a machine in any other state the Server is written
without `provisioning`, and the report says so.
"""

from __future__ import annotations

from typing import Any

from metalform.importer.collected import Collected, SourceOptions
from metalform.importer.documents import document, slug
from providers.maas import MaasProvider, hostname_of
from providers.maas.client import MaasClient
from providers.maas.mapping import state_name
from reconciler.errors import ProviderError
from reconciler.load import DesiredState
from reconciler.model import Resource
from reconciler.model.hardware import ProvisioningState, ServerSpec
from reconciler.model.providers import ProviderSpec
from reconciler.provider import ProviderContext

DECLARABLE = {s.value for s in ProvisioningState}
IPMI_PORT = 623


def bmc_of(parameters: dict[str, Any], power_type: str, credential: str) -> dict[str, Any] | None:
    """The Server's `bmc` from MAAS's power parameters (their password left out), or None."""
    address = str(parameters.get("power_address") or "").strip()
    if not address or power_type not in ("redfish", "ipmi"):
        return None
    if power_type == "redfish":
        url = address if "://" in address else f"https://{address}"
        bmc: dict[str, Any] = {"driver": "redfish", "address": url.rstrip("/")}
        if parameters.get("node_id"):
            bmc["systemId"] = str(parameters["node_id"])
    else:
        host = address if ":" in address else f"{address}:{IPMI_PORT}"
        bmc = {"driver": "ipmi", "address": host}
    bmc["credential"] = credential
    return bmc


def provisioning_of(machine: dict[str, Any], provider: str) -> dict[str, Any] | None:
    state = state_name(str(machine.get("status_name", "")))
    if state not in DECLARABLE:
        return None
    block: dict[str, Any] = {"provider": provider, "state": state}
    if state == ProvisioningState.DEPLOYED.value and machine.get("distro_series"):
        block["distroSeries"] = machine["distro_series"]
    tags = sorted(machine.get("tag_names") or [])
    if tags:
        block["tags"] = tags
    return block


def _server(
    client: MaasClient, machine: dict[str, Any], provider: str, options: SourceOptions
) -> tuple[dict[str, Any] | None, list[str]]:
    hostname = str(machine.get("hostname"))
    power_type = str(machine.get("power_type") or "")
    try:
        parameters = client.power_parameters(str(machine["system_id"]))
    except ProviderError as exc:
        return None, [f"machine {hostname}: no BMC address known (power parameters: {exc})"]
    assert options.credential is not None  # checked before anything is read
    bmc = bmc_of(parameters, power_type, options.credential)
    del parameters  # they hold the BMC password
    if bmc is None:
        return None, [f"machine {hostname}: no BMC address known to MAAS (power: {power_type})"]
    spec: dict[str, Any] = {"bmc": bmc}
    name = slug(hostname)
    if name != hostname:
        spec["hostname"] = hostname
    notes: list[str] = []
    block = provisioning_of(machine, provider)
    if block is None:
        notes.append(
            f"Server/{name}: MAAS state {machine.get('status_name')!r} cannot be declared "
            f"({', '.join(sorted(DECLARABLE))}): written without provisioning"
        )
    else:
        spec["provisioning"] = block
    return document("Server", name, spec, options.labels), notes


def collect(
    provider: Resource[ProviderSpec],
    context: ProviderContext,
    options: SourceOptions,
    state: DesiredState,
) -> Collected:
    """Every machine of the Provider's MAAS: one listing, then the power parameters of each
    machine the repository has no Server for."""
    known = {hostname_of(r): r.name for r in state.of_kind("Server", ServerSpec)}
    maas = MaasProvider(context)
    documents: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        client = maas.client(provider.name)
        machines = sorted(client.machines(), key=lambda m: str(m.get("hostname")))
        for machine in machines:
            hostname = str(machine.get("hostname"))
            if hostname in known:
                # Listed as skipped: the repository's Server wins, provisioning included.
                documents.append(document("Server", known[hostname], {}, {}))
                continue
            written, said = _server(client, machine, provider.name, options)
            if written is not None:
                documents.append(written)
            notes += said
    finally:
        maas.close()
    return Collected(documents, len(machines), "machine(s)", notes)
