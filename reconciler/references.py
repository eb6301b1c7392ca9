"""References between resources: dangling names, cycles and two resources claiming one thing."""

from __future__ import annotations

import graphlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model import Address, Resource, address_of, find, is_of
from reconciler.model.hardware import ServerSpec
from reconciler.model.providers import ProviderSpec
from reconciler.model.registry import MAP_KEY, kind, references_of


@dataclass(frozen=True)
class Problem:
    address: Address
    path: tuple[str | int, ...]
    message: str


def _attributes(
    node: Any, path: tuple[str, ...], at: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Follow a camelCase document path through the spec model's attributes: (where, value)
    for each value it reaches (`*` reaches every value of a mapping)."""
    if not path:
        yield at, node
        return
    if isinstance(node, list):  # a list of objects (a Server's BMC accounts): each item
        for index, item in enumerate(node):
            yield from _attributes(item, path, (*at, index))
        return
    part, rest = path[0], path[1:]
    if part == MAP_KEY:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from _attributes(value, rest, (*at, key))
        return
    value = getattr(node, _snake(part), None)
    if value is not None:
        yield from _attributes(value, rest, (*at, part))


def _provider_type_wanted(resource: Resource, path: tuple[str | int, ...]) -> str | None:
    """The Provider type the reference at `path` must name, if the field says one."""
    declared = kind(resource.kind)
    fields = tuple(p for p in path if isinstance(p, str))
    for ref_path, ref in references_of(declared.spec) if declared else ():
        if len(ref_path) == len(fields) and all(
            r in (f, MAP_KEY) for r, f in zip(ref_path, fields, strict=True)
        ):
            return ref.provider_type
    return None


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def references(resource: Resource) -> Iterator[tuple[tuple[str | int, ...], Address]]:
    """The (field path, address) of every resource `resource` refers to."""
    declared = kind(resource.kind)
    if declared is None:
        return
    for path, ref in references_of(declared.spec):
        kind_name = ref.kind
        for where, value in _attributes(resource.spec, path[1:], ("spec",)):
            if isinstance(value, str):
                yield where, address_of(kind_name, value)
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    if isinstance(item, str):
                        yield (*where, index), address_of(kind_name, item)


def check_references(resources: Mapping[Address, Resource]) -> list[Problem]:
    problems: list[Problem] = []
    graph: dict[Address, set[Address]] = {}
    for address, resource in resources.items():
        edges = graph.setdefault(address, set())
        for path, target in references(resource):
            if target not in resources:
                kind, name = target.split("/", 1)
                problems.append(Problem(address, path, f"{kind} {name!r} is not defined"))
                continue
            edges.add(target)
            want = _provider_type_wanted(resource, path)
            provider = (
                find(resources, target, ProviderSpec) if target.startswith("Provider/") else None
            )
            got = provider.spec.type.value if provider is not None else None
            if want is not None and got != want:
                problems.append(
                    Problem(address, path, f"{target} is of type {got}, expected {want}")
                )
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        members = set(exc.args[1])
        first = min(members)
        # Follow the references themselves so the message reads in the YAML's direction.
        chain, current = [first], first
        while True:
            current = min(t for t in graph[current] if t in members)
            chain.append(current)
            if current == first or len(chain) > len(members) + 1:
                break
        path = next(p for p, t in references(resources[first]) if t == chain[1])
        problems.append(Problem(first, path, "reference cycle: " + " -> ".join(chain)))
    problems.extend(_shared_targets(resources))
    return problems


def _shared_targets(resources: Mapping[Address, Resource]) -> Iterator[Problem]:
    """Two Servers driving the same BMC system, or known by the same hostname, is an error."""
    seen_bmc: dict[tuple[str, str], Address] = {}
    seen_host: dict[str, Address] = {}
    for address, resource in resources.items():
        if resource.kind != "Server" or not is_of(resource, ServerSpec):
            continue
        bmc = resource.spec.bmc
        key = (bmc.address.rstrip("/").lower(), bmc.system_id or "")
        if key in seen_bmc:
            yield Problem(
                address,
                ("spec", "bmc", "address"),
                f"same BMC system as {seen_bmc[key]}",
            )
        else:
            seen_bmc[key] = address
        hostname = resource.spec.hostname or resource.name
        if hostname in seen_host:
            yield Problem(
                address,
                ("spec", "hostname"),
                f"hostname {hostname!r} is also {seen_host[hostname]}",
            )
        else:
            seen_host[hostname] = address
