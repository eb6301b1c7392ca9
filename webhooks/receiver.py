"""The seam the server uses: one `WebhookReceiver` per forge, found by entry point.

A receiver turns (headers, raw body) into a verified `GitEvent` without the server knowing
the forge's header names or payload shapes. Entry point group: `metalform.webhooks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webhooks.errors import PayloadError
from webhooks.events import Forge, GitEvent
from webhooks.payload import HeaderGetter, delivery_id_or_digest

ENTRY_POINT_GROUP = "metalform.webhooks"


@dataclass(frozen=True)
class WebhookReceiver:
    """How one forge signs, names and identifies its deliveries."""

    forge: Forge
    route: str
    """Path the server mounts, e.g. `/webhooks/github`."""
    event_header: str
    delivery_headers: tuple[str, ...]
    """Headers carrying the delivery id, best first."""
    authenticate_fn: Callable[[bytes, HeaderGetter, bytes], bool]
    parse_fn: Callable[[str, str | None, bytes], GitEvent]
    summary: str = ""
    """One line for the API document: what arrives there and how it is authenticated."""

    def authenticate(self, secret: bytes, get_header: HeaderGetter, body: bytes) -> bool:
        """True when the delivery carries a valid signature or token for `secret`.

        Always call this before `parse`: nothing in an unauthenticated body is trusted.
        """
        return self.authenticate_fn(secret, get_header, body)

    def delivery_id(self, get_header: HeaderGetter, body: bytes) -> str:
        """The id to de-duplicate on: the forge's header, else a digest of the body."""
        for name in self.delivery_headers:
            value = get_header(name)
            if value and value.strip():
                return delivery_id_or_digest(value, body)
        return delivery_id_or_digest(None, body)

    def parse(self, get_header: HeaderGetter, body: bytes) -> GitEvent:
        """Parse an authenticated delivery; `PayloadError` when it is malformed."""
        event = (get_header(self.event_header) or "").strip()
        if not event:
            raise PayloadError(f"missing {self.event_header} header")
        return self.parse_fn(event, self.delivery_id(get_header, body), body)
