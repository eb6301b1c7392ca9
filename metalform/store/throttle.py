"""Notification throttle windows in the state store, for CLI runs that name one
(`--database` or `METALFORM_DATABASE`): runs on several machines share the windows."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import delete, select

from metalform.store.errors import StoreError
from metalform.store.store import Store
from metalform.store.tables import ThrottleWindowRow

LOCK_WAIT_SECONDS = 30.0


@contextmanager
def windows(store: Store, scope: str) -> Iterator[dict[str, dict[str, Any]]]:
    """The scope's windows (rule -> JSON state) under the scope's lock; what the caller
    leaves in the dict is written back when the block ends without an error."""
    with store.lock(f"metalform:throttle:{scope}", wait_seconds=LOCK_WAIT_SECONDS) as held:
        if held is None:
            raise StoreError(f"the throttle windows of {scope} stayed locked")
        with store._read() as session:
            query = select(ThrottleWindowRow).where(ThrottleWindowRow.scope == scope)
            found = {row.rule: dict(row.state) for row in session.scalars(query)}
        yield found
        _save(store, scope, found)


def _save(store: Store, scope: str, found: Mapping[str, dict[str, Any]]) -> None:
    with store._write() as session:
        session.execute(delete(ThrottleWindowRow).where(ThrottleWindowRow.scope == scope))
        now = store._now()
        session.add_all(
            ThrottleWindowRow(scope=scope, rule=rule, state=state, updated_at=now)
            for rule, state in found.items()
        )
