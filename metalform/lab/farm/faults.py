"""Faults a farm BMC can be told to show."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultKind = Literal["hang", "unavailable", "drop", "slow"]
KINDS: tuple[str, ...] = ("hang", "unavailable", "drop", "slow")


@dataclass(frozen=True)
class Fault:
    """What a faulty BMC does with every request.

    hang: never answers (clients time out); unavailable: HTTP 503 with Retry-After;
    drop: closes the connection without an answer; slow: answers 10x slower.
    """

    kind: FaultKind
    retry_after: int = 1
