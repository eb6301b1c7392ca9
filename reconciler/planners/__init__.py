"""Planners: one pure function per kind, from desired and live state to a change and actions.

A planner gets the desired resource (None when Git no longer declares it) and its live state
(None when it does not exist yet) and returns a ResourcePlan. Kinds without a planner (Credential,
BiosTemplate, Policy, ...) have no live counterpart of their own.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.model import LiveResource, Resource
from reconciler.planners.aggregate import plan_aggregate
from reconciler.planners.base import Draft, PlanContext, ResourcePlan
from reconciler.planners.server import plan_server
from reconciler.planners.service import plan_service

Planner = Callable[[Resource | None, LiveResource | None, PlanContext], ResourcePlan]

PLANNERS: dict[str, Planner] = {
    "Aggregate": plan_aggregate,
    "Server": plan_server,
    "Service": plan_service,
}

__all__ = ["PLANNERS", "Draft", "PlanContext", "Planner", "ResourcePlan"]
