"""Webhook deliveries seen by the server, kept to drop the forges' redeliveries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete

from metalform.store.core import StoreCore, aware, get_or_404, rowcount, to_record
from metalform.store.records import Delivery
from metalform.store.tables import WebhookDeliveryRow


class DeliveryStore(StoreCore):
    """Webhook deliveries by forge and delivery id."""

    def record_delivery(
        self, forge: str, delivery_id: str, *, event: str, result: str = "accepted"
    ) -> bool:
        """Remember a webhook delivery; False when this forge sent this delivery id before
        (a redelivery, to be acknowledged and ignored)."""
        values = {
            "forge": forge,
            "delivery_id": delivery_id,
            "event": event,
            "received_at": self._now(),
            "result": result,
        }
        with self._write() as session:
            return self._insert_ignore(session, WebhookDeliveryRow, values)

    def set_delivery_result(self, forge: str, delivery_id: str, result: str) -> None:
        """Record what came of a delivery (`planned`, `ignored: ...`, `failed: ...`)."""
        with self._write() as session:
            row = get_or_404(
                session,
                WebhookDeliveryRow,
                (forge, delivery_id),
                what="delivery",
                shown=f"{forge}/{delivery_id}",
            )
            row.result = result

    def get_delivery(self, forge: str, delivery_id: str) -> Delivery | None:
        """A recorded delivery, or None."""
        with self._read() as session:
            row = session.get(WebhookDeliveryRow, (forge, delivery_id))
            return None if row is None else to_record(Delivery, row)

    def prune_deliveries(self, older_than: datetime) -> int:
        """Forget deliveries received before `older_than` (forges redeliver for days, not
        forever); returns how many."""
        with self._write() as session:
            return rowcount(
                session,
                delete(WebhookDeliveryRow).where(
                    WebhookDeliveryRow.received_at < aware(older_than)
                ),
            )
