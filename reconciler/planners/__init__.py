"""Planners: one pure function per kind, from desired and live state to a change and actions.

A planner gets the desired resource (None when Git no longer declares it) and its live state
(None when it does not exist yet) and returns a ResourcePlan. Each kind names its planner in
its declaration (`reconciler.model.registry.Kind.planner`); kinds without one (Credential,
BiosTemplate, Policy, ...) have no live counterpart of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from reconciler.model import LiveResource, Resource
from reconciler.model.registry import kinds, planner
from reconciler.planners.base import Draft, PlanContext, ResourcePlan

Planner = Callable[[Resource | None, LiveResource | None, PlanContext], ResourcePlan]


class _Planners(Mapping[str, Planner]):
    """Kind name -> planner, for the kinds that declare one."""

    def __getitem__(self, name: str) -> Planner:
        found = planner(name)
        if found is None:
            raise KeyError(name)
        return found

    def __iter__(self) -> Iterator[str]:
        return (name for name, declared in kinds().items() if declared.planner is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


PLANNERS: Mapping[str, Planner] = _Planners()

__all__ = ["PLANNERS", "Draft", "PlanContext", "Planner", "ResourcePlan"]
