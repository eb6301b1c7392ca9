"""What crosses the broker, both ways: resource documents, actions, LiveResource JSON.

Never a secret value: Credential documents carry references (`fromEnv`, `fromFile`) that a
worker resolves in its own environment; errors are redacted before they are sent back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from reconciler.errors import (
    MetalformError,
    PermanentError,
    TemporaryError,
    UnreachableError,
)
from reconciler.load import resources_from_documents
from reconciler.model import Address, LiveResource, Resource
from reconciler.references import references
from reconciler.secrets import REDACTOR


def closure(batch: Iterable[Resource], everything: Mapping[Address, Resource]) -> list[Resource]:
    """`batch` and every resource it refers to, transitively (Credentials, Providers, ...)."""
    seen: dict[Address, Resource] = {}
    todo = list(batch)
    while todo:
        resource = todo.pop()
        if resource.address in seen:
            continue
        seen[resource.address] = resource
        for _, target in references(resource):
            if target in everything and target not in seen:
                todo.append(everything[target])
    return list(seen.values())


def documents(resources: Iterable[Resource]) -> dict[str, dict[str, Any]]:
    return {r.address: r.document() for r in resources}


def from_documents(docs: Mapping[str, dict[str, Any]]) -> dict[Address, Resource]:
    return resources_from_documents(dict(docs))


def live_json(live: LiveResource) -> dict[str, Any]:
    data = live.model_dump(mode="json")
    if data.get("error"):
        data["error"] = REDACTOR(data["error"])
    return data


def live_from_json(data: Mapping[str, Any]) -> LiveResource:
    return LiveResource.model_validate(data)


_ERRORS: dict[str, type[MetalformError]] = {
    "unreachable": UnreachableError,  # before its base class, TemporaryError
    "temporary": TemporaryError,
    "permanent": PermanentError,
    "error": MetalformError,
}


def error_json(exc: BaseException) -> dict[str, str]:
    """An error as the worker reports it: its class (so the applier classifies it the same
    way as in one process) and its redacted message."""
    kind = next((k for k, cls in _ERRORS.items() if isinstance(exc, cls)), "error")
    return {"class": kind, "message": REDACTOR(str(exc))}


def remote_error(data: Mapping[str, str]) -> MetalformError:
    """The error a worker reported, as the same class of error."""
    cls = _ERRORS.get(data.get("class", ""), MetalformError)
    return cls(data.get("message", "the worker failed"))
