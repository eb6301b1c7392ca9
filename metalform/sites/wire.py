"""What crosses the broker, both ways: resource documents, actions, LiveResource JSON.

Never a secret value: Credential documents carry references (`fromEnv`, `fromFile`) that a
worker resolves in its own environment; errors are redacted before they are sent back.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from pydantic_core import to_jsonable_python

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


def lives_json(lives: Mapping[Address, LiveResource]) -> dict[str, Any]:
    """A read task's answer. A fact value several resources share (the BIOS attribute
    registry of a model: one object per provider, hundreds of attributes) crosses once,
    under `shared` by the digest of its JSON, and `links` says which facts name it; sent with
    each resource, it was most of a worker's CPU and of the answer's bytes."""
    uses = Counter(
        id(value)
        for live in lives.values()
        for value in live.facts.values()
        if isinstance(value, (dict, list))
    )
    digests: dict[int, str] = {}
    shared: dict[str, Any] = {}
    links: dict[str, dict[str, str]] = {}
    out: dict[str, Any] = {}
    for address, live in lives.items():
        common = {
            key: value
            for key, value in live.facts.items()
            if isinstance(value, (dict, list)) and uses[id(value)] > 1
        }
        if common:
            for key, value in common.items():
                digest = digests.get(id(value))
                if digest is None:
                    data = to_jsonable_python(value)
                    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
                    digest = digests[id(value)] = hashlib.sha256(text.encode()).hexdigest()
                    shared[digest] = data
                links.setdefault(address, {})[key] = digest
            facts = {k: v for k, v in live.facts.items() if k not in common}
            live = live.model_copy(update={"facts": facts})
        out[address] = live_json(live)
    return {"live": out, "shared": shared, "links": links}


def lives_from_json(
    answer: Mapping[str, Any], known: MutableMapping[str, Any] | None = None
) -> dict[Address, LiveResource]:
    """The LiveResources of `lives_json`'s answer, each shared fact one object again;
    `known` (digest -> value) makes every answer of a plan share one copy of it too."""
    known = {} if known is None else known
    for digest, value in answer.get("shared", {}).items():
        known.setdefault(digest, value)
    links = answer.get("links", {})
    out: dict[Address, LiveResource] = {}
    for address, item in answer["live"].items():
        if address in links:
            facts = {**item.get("facts", {}), **{k: known[d] for k, d in links[address].items()}}
            item = {**item, "facts": facts}
        out[address] = live_from_json(item)
    return out


COMPRESS_OVER = 16 * 1024
"""A reply longer than this goes zlib-compressed: a read of 100 Redfish servers is about
1.3 MB of JSON (every BIOS attribute of each) and 48 KB compressed, for 2 ms of CPU."""


def pack_reply(answer: Mapping[str, Any]) -> bytes:
    text = json.dumps(answer, separators=(",", ":")).encode()
    return zlib.compress(text, 1) if len(text) > COMPRESS_OVER else text


def unpack_reply(raw: bytes | str) -> Any:
    """A reply as `pack_reply` made it: JSON, or zlib-compressed JSON."""
    if isinstance(raw, str) or raw[:1] == b"{":
        return json.loads(raw)
    return json.loads(zlib.decompress(raw))


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
