"""What gather reads from the live systems, in the flat path shape the diff compares."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from reconciler.model.base import Address, Health


class LiveResource(BaseModel):
    """The observed state of one resource.

    `state` and `pending` map flat field paths (`power`, `bios.attributes.ProcTurboMode`) to
    values in the shape of the desired spec. `pending` holds values staged on the system but not
    yet in effect (BIOS settings waiting for a reboot). `facts` is read-only context the planner
    may use (manufacturer, model, the BIOS attribute registry) and is not compared.
    """

    model_config = ConfigDict(frozen=True)

    address: Address
    exists: bool = True
    state: dict[str, Any] = Field(default_factory=dict)
    pending: dict[str, Any] = Field(default_factory=dict)
    facts: dict[str, Any] = Field(default_factory=dict)
    health: Health = Health.HEALTHY
    error: str | None = None
    """Why the resource could not be read (health Unreachable); never a secret."""

    @property
    def reachable(self) -> bool:
        return self.health is not Health.UNREACHABLE

    def effective(self, path: str) -> Any:
        """The value that will be in force after the next reboot: pending, else current."""
        if path in self.pending:
            return self.pending[path]
        return self.state.get(path)

    def fingerprint(self) -> str:
        """A digest of everything apply depends on, to detect that the system changed."""
        body = json.dumps(
            {"exists": self.exists, "state": self.state, "pending": self.pending},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def unreachable(address: Address, error: str) -> LiveResource:
    return LiveResource(address=address, health=Health.UNREACHABLE, error=error)
