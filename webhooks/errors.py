"""Failures of the webhook layer: bad deliveries (the sender's fault) and forge API errors.

The HTTP layer maps them in one error handler: `PayloadTooLarge` to 413, `PayloadError` to 400.
`ForgeError` is a provider failure (temporary or permanent) raised by the forge clients.
None of their messages ever carries a token, a webhook secret or a signature.
"""

from __future__ import annotations

from reconciler.errors import MetalformError, ProviderError


class WebhookError(MetalformError):
    """A delivery was refused before it became an event."""

    http_status = 400
    code = "WEBHOOK_REJECTED"


class PayloadError(WebhookError):
    """The body is not valid JSON, not an object, or misses a field the event needs."""

    http_status = 400
    code = "INVALID_PAYLOAD"


class PayloadTooLarge(WebhookError):
    """The body is larger than `MAX_BODY_BYTES`; it is refused before it is read."""

    http_status = 413
    code = "PAYLOAD_TOO_LARGE"
    template = "webhook body of {size} bytes exceeds the limit of {limit} bytes"


class ForgeError(ProviderError):
    """A call to the GitHub or GitLab API failed.

    `status` is the HTTP status (None when no answer came back). Rate limits, 5xx and
    connection failures are `temporary`, with the forge's `Retry-After` when it sent one.
    """

    def __init__(
        self,
        *,
        forge: str,
        call: str,
        status: int | None,
        detail: str = "",
        temporary: bool = False,
        retry_after: float = 0.0,
    ) -> None:
        what = f"HTTP {status}" if status is not None else "no answer"
        message = f"{forge} API {call} failed: {what}"
        if detail:
            message += f": {detail}"
        super().__init__(message, forge=forge, call=call, status=status)
        self.forge = forge
        self.call = call
        self.status = status
        # Instance attributes shadow ProviderError's class defaults: whether a retry can help
        # depends on the answer, not on the exception class.
        self.temporary = temporary
        self.retry_after = retry_after
