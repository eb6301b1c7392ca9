"""Signed task bodies: a worker runs only what a holder of METALFORM_TASK_KEY sent.

The body is canonical JSON with an expiry; the signature is an HMAC-SHA256 over it. A task
pushed onto the broker by anyone else (forged, altered, replayed after its expiry) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from reconciler.errors import MetalformError


class ForgedTask(MetalformError):
    template = "refused a task: {why}"


def sign(body: dict[str, Any], key: bytes, ttl: float) -> dict[str, str]:
    """The envelope a task carries: the canonical body and its signature."""
    payload = json.dumps({**body, "expires": time.time() + ttl}, sort_keys=True)
    digest = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    return {"payload": payload, "signature": digest}


def verify(envelope: object, key: bytes) -> dict[str, Any]:
    """The body of a correctly signed, unexpired envelope; ForgedTask otherwise."""
    if not isinstance(envelope, dict):
        raise ForgedTask(why="the body is not a signed envelope")
    payload, signature = envelope.get("payload"), envelope.get("signature")
    if not isinstance(payload, str) or not isinstance(signature, str):
        raise ForgedTask(why="the body is not a signed envelope")
    want = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, signature):
        raise ForgedTask(why="bad signature")
    body: dict[str, Any] = json.loads(payload)
    if float(body.get("expires", 0)) < time.time():
        raise ForgedTask(why="expired")
    return body
