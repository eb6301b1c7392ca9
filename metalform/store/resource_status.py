"""Sync and health of each resource of a repository, its labels and its last action; and the
per-repository summary (last plan, last apply, counts)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.orm import Session

from metalform.store.core import StoreCore, aware, chunks, to_record
from metalform.store.errors import StoreError
from metalform.store.records import RepositoryStatus, ResourceStatus, ResourceStatusUpdate
from metalform.store.tables import RepositoryRow, ResourceLabelRow, ResourceStatusRow
from reconciler.model.base import Address, Health, SyncStatus
from reconciler.model.plan import ActionStatus


class ResourceStatusStore(StoreCore):
    """Resource status, written after plans, drift checks and actions."""

    def _upsert_resource(
        self, session: Session, repository: str, change: ResourceStatusUpdate
    ) -> ResourceStatusRow:
        kind, name = _split_address(change.address)
        now = self._now()
        self._ensure_repository(session, repository)
        # insert-if-absent, then lock and update: two writers of a new resource cannot collide
        self._insert_ignore(
            session,
            ResourceStatusRow,
            {
                "repository": repository,
                "address": change.address,
                "kind": kind,
                "name": name,
                "labels": {},
                "sync": SyncStatus.UNKNOWN.value,
                "health": Health.UNKNOWN.value,
                "updated_at": now,
            },
        )
        row = session.get(
            ResourceStatusRow,
            (repository, change.address),
            with_for_update=True,
            populate_existing=True,
        )
        assert row is not None
        _apply_change(row, change)
        row.updated_at = now
        session.flush()
        if change.labels is not None and change.labels != row.labels:
            row.labels = dict(change.labels)
            _delete_labels(session, repository, change.address)
            session.add_all(
                ResourceLabelRow(repository=repository, address=change.address, key=k, value=v)
                for k, v in change.labels.items()
            )
            session.flush()
        return row

    def upsert_resource_status(
        self, repository: str, change: ResourceStatusUpdate
    ) -> ResourceStatus:
        """Create or update one resource's status; fields of `change` left None are kept."""
        with self._write() as session:
            return resource_record(self._upsert_resource(session, repository, change))

    def upsert_resource_statuses(
        self,
        repository: str,
        changes: Iterable[ResourceStatusUpdate],
        *,
        prune: bool = False,
    ) -> int:
        """Apply many changes in one transaction (after a plan or a drift check). With
        `prune`, resources of `repository` not among `changes` are forgotten (gone from Git).
        Returns how many resources were written."""
        with self._write() as session:
            seen: set[str] = set()
            for change in changes:
                self._upsert_resource(session, repository, change)
                seen.add(change.address)
            if prune:
                stale = select(ResourceStatusRow.address).where(
                    ResourceStatusRow.repository == repository
                )
                gone = [a for a in session.scalars(stale) if a not in seen]
                for chunk in chunks(gone, 500):
                    # labels go by ON DELETE CASCADE
                    session.execute(
                        delete(ResourceStatusRow).where(
                            ResourceStatusRow.repository == repository,
                            ResourceStatusRow.address.in_(chunk),
                        )
                    )
            return len(seen)

    def get_resource_status(self, repository: str, address: Address) -> ResourceStatus | None:
        """One resource's status, or None when the store has none."""
        with self._read() as session:
            row = session.get(ResourceStatusRow, (repository, address))
            return None if row is None else resource_record(row)

    def list_resource_status(
        self,
        repository: str | None = None,
        *,
        kind: str | None = None,
        labels: Mapping[str, str | None] | None = None,
        sync: SyncStatus | Iterable[SyncStatus] | None = None,
        health: Health | Iterable[Health] | None = None,
    ) -> list[ResourceStatus]:
        """Resources by address, filtered: all `labels` must match (a None value: the label is
        present with any value); `sync` and `health` take one value or several."""
        query = select(ResourceStatusRow)
        if repository is not None:
            query = query.where(ResourceStatusRow.repository == repository)
        if kind is not None:
            query = query.where(ResourceStatusRow.kind == kind)
        for key, value in (labels or {}).items():
            match = and_(
                ResourceLabelRow.repository == ResourceStatusRow.repository,
                ResourceLabelRow.address == ResourceStatusRow.address,
                ResourceLabelRow.key == key,
            )
            if value is not None:
                match = and_(match, ResourceLabelRow.value == value)
            query = query.where(exists().where(match))
        if sync is not None:
            syncs = [sync] if isinstance(sync, SyncStatus) else list(sync)
            query = query.where(ResourceStatusRow.sync.in_([SyncStatus(s).value for s in syncs]))
        if health is not None:
            healths = [health] if isinstance(health, Health) else list(health)
            query = query.where(ResourceStatusRow.health.in_([Health(h).value for h in healths]))
        query = query.order_by(ResourceStatusRow.repository, ResourceStatusRow.address)
        with self._read() as session:
            return [resource_record(row) for row in session.scalars(query)]

    def delete_resource_status(self, repository: str, address: Address) -> bool:
        """Forget one resource's status; False when there was none."""
        with self._write() as session:
            row = session.get(ResourceStatusRow, (repository, address))
            if row is None:
                return False
            session.delete(row)
            session.flush()
            # SQLite enforces the cascade only with foreign keys on; do not rely on it here
            _delete_labels(session, repository, address)
            return True

    # -- repositories ----------------------------------------------------------------------

    def repository_status(self, repository: str) -> RepositoryStatus | None:
        """What was last planned and applied for `repository`, and its resource counts."""
        with self._read() as session:
            row = session.get(RepositoryRow, repository)
            if row is None:
                return None
            return _repository_status(session, row)

    def list_repositories(self) -> list[RepositoryStatus]:
        """Every repository the store has seen, by key."""
        with self._read() as session:
            rows = session.scalars(select(RepositoryRow).order_by(RepositoryRow.key)).all()
            return [_repository_status(session, row) for row in rows]


def _split_address(address: Address) -> tuple[str, str]:
    kind, sep, name = address.partition("/")
    if not sep or not kind or not name:
        raise StoreError(f"invalid address {address!r}: expected Kind/name")
    return kind, name


def _apply_change(row: ResourceStatusRow, change: ResourceStatusUpdate) -> None:
    """Copy the fields `change` gives onto `row` (None: keep; an empty message clears it)."""
    if change.sync is not None:
        row.sync = SyncStatus(change.sync).value
    if change.health is not None:
        row.health = Health(change.health).value
    if change.message is not None:
        row.message = change.message or None
    if change.last_action is not None:
        row.last_action = change.last_action
    if change.last_result is not None:
        row.last_result = ActionStatus(change.last_result).value
    if change.last_action_at is not None:
        row.last_action_at = aware(change.last_action_at)


def _delete_labels(session: Session, repository: str, address: Address) -> None:
    session.execute(
        delete(ResourceLabelRow).where(
            ResourceLabelRow.repository == repository,
            ResourceLabelRow.address == address,
        )
    )


def _repository_status(session: Session, row: RepositoryRow) -> RepositoryStatus:
    def counts(column: Any) -> dict[str, int]:
        query = (
            select(column, func.count())
            .where(ResourceStatusRow.repository == row.key)
            .group_by(column)
        )
        return {str(value): int(n) for value, n in session.execute(query)}

    by_kind = counts(ResourceStatusRow.kind)
    by_sync = counts(ResourceStatusRow.sync)
    return to_record(
        RepositoryStatus,
        row,
        resources=sum(by_kind.values()),
        drift=by_sync.get(SyncStatus.OUT_OF_SYNC.value, 0),
        by_kind=by_kind,
        by_sync=by_sync,
        by_health=counts(ResourceStatusRow.health),
    )


def resource_record(row: ResourceStatusRow) -> ResourceStatus:
    return to_record(
        ResourceStatus,
        row,
        labels=dict(row.labels or {}),
        sync=SyncStatus(row.sync),
        health=Health(row.health),
        last_result=ActionStatus(row.last_result) if row.last_result else None,
    )
