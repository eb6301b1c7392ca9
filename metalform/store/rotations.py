"""The audit trail of BMC login secret rotations: who, when, which BMCs, fingerprints."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from metalform.store.core import DEFAULT_PAGE_SIZE, StoreCore, page, page_rows
from metalform.store.ids import new_id
from metalform.store.records import Page, RotationRecord
from metalform.store.tables import RotationRow


def rotation_record(row: RotationRow) -> RotationRecord:
    return RotationRecord(
        id=row.id,
        repository=row.repository,
        apply_id=row.apply_id,
        credential=row.credential,
        who=row.who,
        bmcs=tuple(row.bmcs),
        fingerprint_before=row.fingerprint_before,
        fingerprint_after=row.fingerprint_after,
        created_at=row.created_at,
    )


class RotationStore(StoreCore):
    """Rotations, newest first."""

    def record_rotation(
        self,
        repository: str,
        credential: str,
        bmcs: Sequence[str],
        *,
        fingerprint_before: str | None,
        fingerprint_after: str | None,
        who: str | None = None,
        apply_id: str | None = None,
    ) -> RotationRecord:
        row = RotationRow(
            id=new_id(),
            repository=repository,
            apply_id=apply_id,
            credential=credential,
            who=who,
            bmcs=list(bmcs),
            fingerprint_before=fingerprint_before,
            fingerprint_after=fingerprint_after,
            created_at=self._now(),
        )
        with self._write() as session:
            session.add(row)
            session.flush()
            return rotation_record(row)

    def list_rotations(
        self,
        *,
        repository: str | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        before: str | None = None,
    ) -> Page[RotationRecord]:
        query = select(RotationRow)
        if repository is not None:
            query = query.where(RotationRow.repository == repository)
        with self._read() as session:
            rows = page_rows(session, query, RotationRow.id, limit, before)
            items = [rotation_record(row) for row in rows]
        return page(items, limit)
