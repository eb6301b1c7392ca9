"""Policy: guard rails the planner enforces."""

from __future__ import annotations

from pydantic import Field

from reconciler.model.base import SpecModel


class Selector(SpecModel):
    kinds: list[str] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, kind: str, labels: dict[str, str]) -> bool:
        if self.kinds and kind not in self.kinds:
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())


class PolicySpec(SpecModel):
    max_changes_per_apply: int | None = Field(default=None, ge=1)
    protect: Selector | None = None
