"""`POST /webhooks/github` and `POST /webhooks/gitlab`: verified, de-duplicated deliveries.

Order matters: size first (413, before reading), then the signature or token (401), then
parsing (400); only then is the delivery id recorded, so an unauthenticated sender can neither
fill the delivery table nor poison the de-duplication of real deliveries. None of the refusals
starts anything; each is recorded as a `webhook.rejected` event.
"""

from __future__ import annotations

from typing import Any

import falcon

from metalform.api.errors import NotConfigured, Unauthorized
from metalform.server.config import ForgeSettings
from metalform.server.control import ControlPlane
from metalform.server.webhook_flow import WebhookFlow
from reconciler.model.events import EventType
from webhooks import MAX_BODY_BYTES, PayloadError, PayloadTooLarge, WebhookReceiver, read_body


class Webhook:
    """One forge's webhook route."""

    open = True  # authenticated by the forge's secret, not by a bearer token
    checks_own_body = True  # its size refusals are recorded as `webhook.rejected`

    def __init__(
        self,
        service: ControlPlane,
        receiver: WebhookReceiver,
        settings: ForgeSettings | None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.service = service
        self.receiver = receiver
        self.settings = settings
        self.flow = WebhookFlow(service)
        self.max_body = max_body

    @property
    def forge(self) -> str:
        return self.receiver.forge.value

    def _reject(self, req: falcon.Request, result: str, reason: str) -> None:
        self.service.metrics.webhooks.labels(self.forge, result).inc()
        self.service.bus.emit(
            EventType.WEBHOOK_REJECTED,
            {"forge": self.forge, "reason": reason, "remote": req.remote_addr},
            repository=self.service.repository,
        )

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        settings = self.settings
        if settings is None or not settings.secret:
            self._reject(req, "not_configured", f"{self.forge} webhooks are not configured")
            raise NotConfigured(f"{self.forge} webhooks are not configured on this server")
        try:
            stream: Any = req.bounded_stream  # falcon's BoundedStream reads like IO[bytes]
            body = read_body(stream, req.content_length, self.max_body)
        except PayloadTooLarge:
            self._reject(req, "too_large", "body too large")
            raise
        if not self.receiver.authenticate(settings.secret, req.get_header, body):
            self._reject(req, "unauthorized", "bad signature or token")
            raise Unauthorized(f"the {self.forge} signature or token does not match")
        try:
            event = self.receiver.parse(req.get_header, body)
        except PayloadError as exc:
            self._reject(req, "invalid", str(exc))
            raise
        store = self.service.store
        if not store.record_delivery(self.forge, event.delivery_id, event=event.event_name):
            self.service.metrics.webhooks.labels(self.forge, "duplicate").inc()
            resp.status = falcon.HTTP_200
            resp.media = {"status": "duplicate", "delivery": event.delivery_id}
            return
        try:
            outcome = self.flow.handle(event, settings)
        except Exception:
            store.set_delivery_result(self.forge, event.delivery_id, "failed")
            self.service.metrics.webhooks.labels(self.forge, "failed").inc()
            raise
        store.set_delivery_result(self.forge, event.delivery_id, outcome.result)
        self.service.metrics.webhooks.labels(self.forge, outcome.result).inc()
        resp.status = outcome.status
        resp.media = {**outcome.body, "delivery": event.delivery_id}
