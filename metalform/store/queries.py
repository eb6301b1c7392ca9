"""Read-only queries the web console needs: resources a page at a time with a text search,
and the webhook deliveries seen. Kept apart from `store.py`, which holds the writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, exists, func, or_, select

from metalform.store.events import event_record
from metalform.store.records import Delivery, Event, ResourceStatus
from metalform.store.resource_status import resource_record
from metalform.store.store import Store
from metalform.store.tables import (
    EventRow,
    ResourceLabelRow,
    ResourceStatusRow,
    WebhookDeliveryRow,
)
from reconciler.model.base import Health, SyncStatus

MAX_PAGE = 500


@dataclass(frozen=True)
class ResourcePage:
    """One page of resources, by address, and how many match in all."""

    items: list[ResourceStatus]
    total: int
    offset: int
    limit: int


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def resource_page(
    store: Store,
    repository: str,
    *,
    kind: str | None = None,
    labels: Mapping[str, str | None] | None = None,
    sync: Sequence[SyncStatus] = (),
    health: Sequence[Health] = (),
    text: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> ResourcePage:
    """Resources of `repository` filtered like `Store.list_resource_status`, plus a
    case-insensitive `text` search in the address and the message; one page of them."""
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    where = [ResourceStatusRow.repository == repository]
    if kind:
        where.append(ResourceStatusRow.kind == kind)
    for key, value in (labels or {}).items():
        match = and_(
            ResourceLabelRow.repository == ResourceStatusRow.repository,
            ResourceLabelRow.address == ResourceStatusRow.address,
            ResourceLabelRow.key == key,
        )
        if value is not None:
            match = and_(match, ResourceLabelRow.value == value)
        where.append(exists().where(match))
    if sync:
        where.append(ResourceStatusRow.sync.in_([s.value for s in sync]))
    if health:
        where.append(ResourceStatusRow.health.in_([h.value for h in health]))
    if text:
        pattern = f"%{_escape_like(text.lower())}%"
        where.append(
            or_(
                func.lower(ResourceStatusRow.address).like(pattern, escape="\\"),
                func.lower(func.coalesce(ResourceStatusRow.message, "")).like(pattern, escape="\\"),
            )
        )
    query = select(ResourceStatusRow).where(*where).order_by(ResourceStatusRow.address)
    count = select(func.count()).select_from(ResourceStatusRow).where(*where)
    with store._read() as session:
        total = int(session.scalar(count) or 0)
        rows = session.scalars(query.offset(offset).limit(limit))
        items = [resource_record(row) for row in rows]
    return ResourcePage(items, total, offset, limit)


def label_keys(store: Store, repository: str) -> list[str]:
    """The label keys in use, for the filter form."""
    query = (
        select(ResourceLabelRow.key)
        .where(ResourceLabelRow.repository == repository)
        .distinct()
        .order_by(ResourceLabelRow.key)
    )
    with store._read() as session:
        return list(session.scalars(query))


def kinds(store: Store, repository: str) -> list[str]:
    """The kinds of the repository's resources, for the filter form."""
    query = (
        select(ResourceStatusRow.kind)
        .where(ResourceStatusRow.repository == repository)
        .distinct()
        .order_by(ResourceStatusRow.kind)
    )
    with store._read() as session:
        return list(session.scalars(query))


def list_deliveries(store: Store, *, limit: int = 50) -> list[Delivery]:
    """Webhook deliveries, newest first."""
    query = (
        select(WebhookDeliveryRow)
        .order_by(WebhookDeliveryRow.received_at.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    with store._read() as session:
        return [
            Delivery(
                forge=row.forge,
                delivery_id=row.delivery_id,
                event=row.event,
                received_at=row.received_at,
                result=row.result,
            )
            for row in session.scalars(query)
        ]


def events_of(store: Store, repository: str, address: str, *, limit: int = 20) -> list[Event]:
    """The newest events about one resource (its actions, mostly), newest first."""
    query = (
        select(EventRow)
        .where(EventRow.repository == repository, EventRow.address == address)
        .order_by(EventRow.id.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    with store._read() as session:
        return [event_record(row) for row in session.scalars(query)]


def recent_events(store: Store, event_type: str, *, limit: int = 50) -> list[Event]:
    """The newest events of one type (refused webhook deliveries, for the console)."""
    query = (
        select(EventRow)
        .where(EventRow.type == event_type)
        .order_by(EventRow.id.desc())
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    with store._read() as session:
        return [event_record(row) for row in session.scalars(query)]
