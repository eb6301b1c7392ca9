"""NetBox as an inventory source: NetBox devices -> Server resources, merged with Git.

A `Provider` of `type: netbox` with `inventory: {filter, template}` imports the devices its
filter selects as Servers. The mapping is pure (`servers_from_devices`) and so is the merge
(`reconciler.inventory.merge_inventory`); only `NetboxInventory.import_servers` talks to
NetBox, through a fetch function (by default `providers.netbox.client.fetch_devices`).

The mapping of one device (a NetBox `dcim.devices` object as JSON):

- `metadata.name`: the device name, lowercased; a name that breaks the name rule skips the device
- `metadata.labels`: `site` (site slug), `role` (role slug; `device_role` on NetBox < 4.0),
  `tag.<slug>: "true"` for each tag, so an Aggregate `selector` can match NetBox tags
- `metadata.annotations`: `netbox.provider` and `netbox.device-id`, to find the device again
- `spec`: the Provider's `inventory.template` (e.g. `bmc.credential`, `power`, `bios`), deep
  merged under what the device says: `bmc.address`, `bmc.driver` and `bmc.systemId` from the
  custom fields `bmc_address`, `bmc_driver` and `bmc_system_id`

A device that cannot become a valid Server (no name, bad name, no `bmc_address`, a template
that does not validate, a reference to an undefined Credential) is skipped with a warning that
names the device: one bad NetBox record must not block the plan of the rest of the fleet.
Git wins where Git and NetBox both define `Server/<name>`; a warning says so.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from providers.netbox.client import fetch_devices
from reconciler import inventory
from reconciler.inventory import Imported, field_path, warning
from reconciler.load import DesiredState
from reconciler.model import API_VERSION, Location, Resource, address_of
from reconciler.model.base import NAME_MAX, NAME_PATTERN, Metadata
from reconciler.model.hardware import ServerSpec
from reconciler.model.providers import ProviderSpec
from reconciler.secrets import Secret

SOURCE = "netbox"
"""The `source` of every imported Server (the text plan shows `(from netbox)`)."""
TAG_LABEL_PREFIX = "tag."
"""A NetBox tag `gpu` becomes the label `tag.gpu: "true"`."""
TAG_LABEL_VALUE = "true"
PROVIDER_ANNOTATION = "netbox.provider"
DEVICE_ANNOTATION = "netbox.device-id"
CUSTOM_FIELDS = {"bmc_address": "address", "bmc_driver": "driver", "bmc_system_id": "systemId"}
"""NetBox custom field -> field of the Server's `spec.bmc`."""

DeviceFetcher = Callable[[Resource[ProviderSpec], Secret | None], list[dict[str, Any]]]
"""Fetch the devices of one netbox Provider resource (its filter applied), given its token."""


def _slug(value: Any) -> str | None:
    """The slug of a nested NetBox object (`{"slug": ...}`), or None when absent."""
    if isinstance(value, Mapping):
        slug = value.get("slug")
        return str(slug) if slug not in (None, "") else None
    return None


def _describe(device: Mapping[str, Any]) -> str:
    """How a diagnostic names a device: its NetBox name and id, as an operator searches it."""
    name = device.get("name")
    ident = device.get("id")
    shown = repr(name) if name else "(unnamed)"
    return f"NetBox device {shown} (id {ident})" if ident is not None else f"NetBox device {shown}"


def device_labels(device: Mapping[str, Any]) -> dict[str, str]:
    """Labels from the device's site, role and tags."""
    labels: dict[str, str] = {}
    site = _slug(device.get("site"))
    if site:
        labels["site"] = site
    # NetBox 4.0 renamed `device_role` to `role`; accept both so older servers work too.
    role = _slug(device.get("role")) or _slug(device.get("device_role"))
    if role:
        labels["role"] = role
    for tag in device.get("tags") or ():
        slug = _slug(tag)
        if slug:
            labels[TAG_LABEL_PREFIX + slug] = TAG_LABEL_VALUE
    return labels


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _name_problem(name: str) -> str | None:
    if len(name) > NAME_MAX:
        return f"is {len(name)} characters long; at most {NAME_MAX} allowed"
    if not NAME_PATTERN.fullmatch(name):
        return (
            "must be lowercase letters, digits, '.' and '-', starting and ending with a "
            "letter or digit"
        )
    return None


def server_document(
    device: Mapping[str, Any], provider: str, template: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """The Server document for one device, or (None, why it cannot be one)."""
    raw_name = device.get("name")
    if not isinstance(raw_name, str) or not raw_name.strip():
        return None, "has no name"
    name = raw_name.strip().lower()
    problem = _name_problem(name)
    if problem:
        return None, f"cannot become a Server: its name {name!r} {problem}"
    custom = device.get("custom_fields") or {}
    if not isinstance(custom, Mapping):
        custom = {}
    bmc: dict[str, Any] = {}
    for custom_field, bmc_field in CUSTOM_FIELDS.items():
        value = custom.get(custom_field)
        if value not in (None, ""):
            bmc[bmc_field] = str(value)
    if "address" not in bmc:
        return None, "has no BMC address (custom field bmc_address is empty)"
    spec = _deep_merge(dict(template), {"bmc": bmc})
    metadata = {
        "name": name,
        "labels": device_labels(device),
        "annotations": {
            PROVIDER_ANNOTATION: provider,
            **({DEVICE_ANNOTATION: str(device["id"])} if device.get("id") is not None else {}),
        },
    }
    return {"apiVersion": API_VERSION, "kind": "Server", "metadata": metadata, "spec": spec}, None


def servers_from_devices(
    devices: Iterable[Mapping[str, Any]], provider: str, template: Mapping[str, Any]
) -> Imported:
    """Validate every device as a Server; the ones that are not valid become warnings."""
    result = Imported()
    seen: dict[str, str] = {}
    for device in devices:
        who = _describe(device)
        doc, why = server_document(device, provider, template)
        if doc is None:
            result.diagnostics.append(warning(f"{who} {why}; not imported", provider=provider))
            continue
        address = address_of("Server", doc["metadata"]["name"])
        if address in seen:
            result.diagnostics.append(
                warning(
                    f"{who} has the same name as {seen[address]}; only the first is imported",
                    address,
                    provider=provider,
                )
            )
            continue
        try:
            metadata = Metadata.model_validate(doc["metadata"])
            spec = ServerSpec.model_validate(doc["spec"])
        except ValidationError as exc:
            for err in exc.errors():
                # The message only, never the input: a template could hold anything.
                msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
                result.diagnostics.append(
                    warning(
                        f"{who} cannot become a Server: {msg.removeprefix('Value error, ')}; "
                        "not imported",
                        address,
                        provider=provider,
                        field_path=field_path(["spec", *err["loc"]]),
                    )
                )
            continue
        seen[address] = who
        location = Location(file=f"{address_of('Provider', provider)} ({who})")
        result.servers[address] = Resource(
            kind="Server", metadata=metadata, spec=spec, location=location, source=SOURCE
        )
    return result


def device_origin(server: Resource[ServerSpec]) -> str:
    """How warnings name the device a Server came from: `NetBox (device 12)`."""
    return f"NetBox (device {server.metadata.annotations.get(DEVICE_ANNOTATION, '?')})"


def merge_inventory(desired: DesiredState, imported: Mapping[str, Imported]) -> DesiredState:
    """`reconciler.inventory.merge_inventory` with warnings that name NetBox devices."""
    return inventory.merge_inventory(desired, imported, origin=device_origin)


class NetboxInventory:
    """The `metalform.inventory` entry point for Providers of `type: netbox`."""

    def __init__(self, fetch: DeviceFetcher = fetch_devices) -> None:
        self.fetch = fetch

    def import_servers(self, provider: Resource[ProviderSpec], token: Secret | None) -> Imported:
        declared = provider.spec.inventory
        if declared is None:
            return Imported()  # not an inventory Provider: it declares no Servers
        devices = self.fetch(provider, token)
        return servers_from_devices(devices, provider.name, declared.template)

    def origin(self, server: Resource[ServerSpec]) -> str:
        return device_origin(server)


def import_inventory(
    desired: DesiredState,
    credential_resolver: inventory.CredentialResolverFn,
    fetch: DeviceFetcher | None = None,
) -> DesiredState:
    """Add the Servers of every netbox inventory Provider to `desired`."""
    source = NetboxInventory(fetch) if fetch is not None else NetboxInventory()
    return inventory.import_inventory(desired, credential_resolver, {"netbox": source})
