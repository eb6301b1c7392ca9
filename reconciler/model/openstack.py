"""Aggregate: an OpenStack Nova host aggregate (spot and on-demand GPU pools)."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field, model_validator

from reconciler.model.base import SpecModel
from reconciler.model.checks import ManagedSpec
from reconciler.model.registry import Kind, Ref

RESERVED_METADATA_PREFIX = "metalform:"
"""Aggregate metadata keys Metalform keeps for itself (its management mark)."""


class OnInstances(str, enum.Enum):
    REFUSE = "Refuse"
    ALLOW = "Allow"


class LabelSelector(SpecModel):
    match_labels: dict[str, str] = Field(default_factory=dict)

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items())


class AggregateSpec(ManagedSpec):
    provider: Annotated[str, Ref("Provider", "openstack")] = Field(
        description="Name of a Provider of type openstack"
    )
    availability_zone: str | None = None
    metadata: dict[str, str] = Field(
        default_factory=dict,
        json_schema_extra={"propertyNames": {"not": {"pattern": f"^{RESERVED_METADATA_PREFIX}"}}},
    )
    hosts: list[Annotated[str, Ref("Server")]] | None = Field(
        default=None, description="Server names"
    )
    selector: LabelSelector | None = Field(default=None, description="Servers by label")
    on_instances: OnInstances = OnInstances.REFUSE

    @model_validator(mode="after")
    def _hosts_or_selector(self) -> AggregateSpec:
        if self.hosts is not None and self.selector is not None:
            raise ValueError("give hosts or selector, not both")
        reserved = sorted(k for k in self.metadata if k.startswith(RESERVED_METADATA_PREFIX))
        if reserved:
            raise ValueError(
                f"metadata key {reserved[0]!r} is reserved: Metalform marks the "
                f"aggregates it creates with {RESERVED_METADATA_PREFIX}* keys"
            )
        return self


AGGREGATE = Kind(
    "Aggregate",
    AggregateSpec,
    planner="reconciler.planners.aggregate:plan_aggregate",
    phases={"aggregate": 40},
    live_from="provider",
)
