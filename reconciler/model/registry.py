"""The registry of kinds: each kind is declared once, next to its model.

A declaration (`Kind`) holds everything the engine needs to know about a kind: its spec model,
the planner that turns it into actions, the phases of its operations in the action order and
where its live state is read. References between kinds are not listed here: they are metadata
on the spec's fields (`Annotated[str, Ref("Credential")]`), read once per model.

Kinds are found through the `metalform.kinds` entry point group (each entry point names a
`Kind`), so adding a kind touches its model module, its planner and its provider, plus the
entry point and its regenerated schema. `register()` adds one at run time (tests do).
"""

from __future__ import annotations

import importlib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from reconciler.model.base import Resource

ENTRY_POINT_GROUP = "metalform.kinds"


@dataclass(frozen=True)
class Ref:
    """Field metadata: the value names a resource of `kind` (of `provider_type`, for Providers)."""

    kind: str
    provider_type: str | None = None


ProviderTypeOf = Callable[[str], str | None]
"""Name of a Provider resource -> its type (None when Git declares no such Provider)."""
Drivers = Callable[["Resource", ProviderTypeOf], list[str]]


@dataclass(frozen=True)
class Kind:
    """One kind of resource, declared once."""

    name: str
    spec: type[BaseModel]
    planner: str | None = None
    """`module:function` of its planner (resolved when first planned: planners import models);
    None for kinds with no live counterpart of their own (Credential, Policy, ...)."""
    phases: Mapping[str, int] = field(default_factory=dict)
    """Operation prefix (`bios` of `bios.set`) -> its place in the action order."""
    live_from: str | None = None
    """The spec field naming the Provider whose system holds this kind's live state."""
    drivers: Drivers | None = None
    """Which providers read it, primary first, when `live_from` cannot say (a Server)."""

    def providers_of(self, resource: Resource, provider_type: ProviderTypeOf) -> list[str]:
        """The providers that hold part of `resource`'s live state, primary first."""
        if self.drivers is not None:
            return self.drivers(resource, provider_type)
        if self.live_from is not None:
            found = provider_type(getattr(resource.spec, self.live_from))
            return [found] if found else []
        return []


_extra: dict[str, Kind] = {}


@cache
def _installed() -> dict[str, Kind]:
    kinds: dict[str, Kind] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        kind = ep.load()
        if not isinstance(kind, Kind) or kind.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} is not Kind({ep.name!r})")
        kinds[kind.name] = kind
    return kinds


def kinds() -> dict[str, Kind]:
    """Every kind, by name."""
    return {**_installed(), **_extra}


def kind(name: str) -> Kind | None:
    return _extra.get(name) or _installed().get(name)


def register(declared: Kind) -> Kind:
    """Add a kind at run time (a kind shipped outside an installed distribution, a test)."""
    _extra[declared.name] = declared
    references_of.cache_clear()
    phases.cache_clear()
    return declared


def unregister(name: str) -> None:
    _extra.pop(name, None)
    references_of.cache_clear()
    phases.cache_clear()


@cache
def phases() -> dict[str, int]:
    """Operation prefix -> order, over every kind."""
    out: dict[str, int] = {}
    for declared in kinds().values():
        out.update(declared.phases)
    return out


def planner(name: str) -> Callable[..., Any] | None:
    """The planner function of a kind, or None when it has none."""
    declared = kind(name)
    if declared is None or declared.planner is None:
        return None
    return _resolve(declared.planner)


@cache
def _resolve(target: str) -> Callable[..., Any]:
    module, _, attribute = target.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return found


RefPath = tuple[tuple[str, ...], Ref]
"""A document path below `spec` (camelCase) and what it refers to; a list field's path
refers to each item, `*` to each value of a mapping."""


MAP_KEY = "*"
"""In a reference path: any key of a mapping."""


@cache
def references_of(model: type[BaseModel]) -> tuple[RefPath, ...]:
    """Every reference field of a spec model, nested models followed."""
    return tuple(_walk(model, ("spec",)))


def _walk(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[RefPath]:
    for name, info in model.model_fields.items():
        path = (*prefix, info.alias or to_camel(name))
        ref = next((m for m in info.metadata if isinstance(m, Ref)), None)
        if ref is not None:
            yield path, ref
            continue
        yield from _walk_type(info.annotation, path)


def _walk_type(annotation: Any, path: tuple[str, ...]) -> Iterator[RefPath]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        ref = next((m for m in metadata if isinstance(m, Ref)), None)
        if ref is not None:
            yield path, ref
            return
        yield from _walk_type(base, path)
    elif origin is dict:
        # A mapping's values may hold references (a Service's secret env): `*` is any key.
        yield from _walk_type(typing.get_args(annotation)[1], (*path, MAP_KEY))
    elif origin in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            yield from _walk_type(arg, path)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _walk(annotation, path)
