"""The state store: plans, applies, events, webhook deliveries, resource status and locks.

SQLite (the default, one file) or PostgreSQL (shared by several server replicas). The schema
is migrated with Alembic when a store is opened.

    store = Store.open("sqlite:///metalform.db")
    plan = store.create_plan("https://git.example/infra.git#main:.", trigger=Trigger.API)
    with store.apply_lock(plan.repository) as acquired:
        if not acquired:
            ...  # another apply of this repository is running somewhere
"""

from metalform.store import locks, recovery
from metalform.store.errors import ConflictError, NotFoundError, StoreError
from metalform.store.locks import Lock
from metalform.store.records import (
    ActionResult,
    ApplyRecord,
    Delivery,
    Event,
    Page,
    PlanRecord,
    RepositoryStatus,
    ResourceStatus,
    ResourceStatusUpdate,
    RotationRecord,
    RunStatus,
    Trigger,
)
from metalform.store.store import Store, apply_lock_name
from reconciler.model.events import EventType

__all__ = [
    "ActionResult",
    "ApplyRecord",
    "ConflictError",
    "Delivery",
    "Event",
    "EventType",
    "Lock",
    "NotFoundError",
    "Page",
    "PlanRecord",
    "RepositoryStatus",
    "ResourceStatus",
    "ResourceStatusUpdate",
    "RotationRecord",
    "RunStatus",
    "Store",
    "StoreError",
    "Trigger",
    "apply_lock_name",
    "locks",
    "recovery",
]
