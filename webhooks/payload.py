"""Shared handling of a delivery body: the size limit, JSON decoding, wire models, delivery ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from webhooks.errors import PayloadError, PayloadTooLarge

MAX_BODY_BYTES = 5 * 1024 * 1024
"""Largest body accepted. GitHub caps deliveries at 25 MB, but the events Metalform handles
are a few KiB (a push lists at most 20 commits); 5 MiB leaves room and bounds memory per request."""

HeaderGetter = Callable[[str], str | None]
"""Reads a request header by name, case-insensitively (Falcon's `req.get_header` fits)."""

M = TypeVar("M", bound=BaseModel)


def ensure_size(content_length: int | None, limit: int = MAX_BODY_BYTES) -> None:
    """Refuse a body announced larger than `limit` before reading it (the server answers 413).

    None (chunked transfer, no Content-Length) passes here; `read_body` enforces the limit on
    the bytes actually read.
    """
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(size=content_length, limit=limit)


def read_body(stream: IO[bytes], content_length: int | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read a request body, never more than `limit` bytes, whatever the client announced."""
    ensure_size(content_length, limit)
    to_read = limit + 1 if content_length is None else content_length
    data = stream.read(to_read)
    if len(data) > limit:
        raise PayloadTooLarge(size=f"more than {limit}", limit=limit)
    return data


def load_object(body: bytes, event: str) -> dict[str, Any]:
    """Decode a JSON object body, or raise `PayloadError` saying what is wrong."""
    if body[:8] == b"payload=":
        # GitHub's other content type; its body is signed just the same, but we parse JSON only.
        raise PayloadError(
            f"{event}: form-encoded body; set the webhook content type to application/json"
        )
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32, which no forge sends.
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise PayloadError(f"{event}: body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"{event}: body is not valid JSON ({exc.msg} at {exc.pos})") from None
    except RecursionError:
        raise PayloadError(f"{event}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{event}: body is a JSON {type(data).__name__}, not an object")
    return data


def validate(model: type[M], data: dict[str, Any], event: str) -> M:
    """Validate `data` against a wire model; errors name the field paths, never the values."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PayloadError(f"{event}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError, limit: int = 5) -> str:
    """`pull_request.head.sha: Field required; ...` without echoing the (untrusted) input."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def delivery_id_or_digest(delivery_id: str | None, body: bytes) -> str:
    """The forge's delivery id, or a digest of the body when the header is missing.

    A redelivery carries the same body, so the digest still de-duplicates retries.
    """
    if delivery_id and delivery_id.strip():
        return delivery_id.strip()
    return "sha256:" + hashlib.sha256(body).hexdigest()[:32]


class Wire(BaseModel):
    """Base of the forge payload shapes: only the fields we read; the rest is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)
