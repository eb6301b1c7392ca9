"""Pydantic models of the desired state, the live state and the plan."""

from reconciler.model.base import (
    API_VERSION,
    Address,
    ChangeKind,
    Diagnostic,
    Health,
    Location,
    Metadata,
    Resource,
    Severity,
    SyncStatus,
    address_of,
    find,
    is_of,
    typed,
)
from reconciler.model.kinds import KIND_SPECS, spec_model
from reconciler.model.live import LiveResource
from reconciler.model.plan import Action, ActionStatus, Change, DiffEntry, Expectation, Plan

__all__ = [
    "API_VERSION",
    "KIND_SPECS",
    "Action",
    "ActionStatus",
    "Address",
    "Change",
    "ChangeKind",
    "Diagnostic",
    "DiffEntry",
    "Expectation",
    "Health",
    "LiveResource",
    "Location",
    "Metadata",
    "Plan",
    "Resource",
    "Severity",
    "SyncStatus",
    "address_of",
    "find",
    "is_of",
    "spec_model",
    "typed",
]
