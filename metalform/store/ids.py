"""Time-ordered identifiers for plans and applies (UUID version 7, RFC 9562)."""

from __future__ import annotations

import secrets
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF


def new_id() -> str:
    """A new UUIDv7 as a string; ids made later sort after earlier ones.

    Sorting by id is sorting by creation time, so pages can be cut by id alone (keyset
    pagination) and stay stable while new rows arrive. Within one millisecond a 12-bit counter
    keeps the ids of this process increasing (RFC 9562, method 1).
    """
    global _last_ms, _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            # start low in the counter space so a burst in one millisecond does not overflow
            _counter = secrets.randbelow(_COUNTER_MAX // 2)
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= secrets.randbits(62)
    return str(uuid.UUID(int=value))


def parse_id(value: str) -> str | None:
    """The canonical form of an id given by a caller, or None when it is not a UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        return None
