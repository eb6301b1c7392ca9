"""The two families of failure: bad input (diagnostics) and failures of live systems.

Every expected failure is a `MetalformError`; the CLI prints its message without a traceback.
Messages are templates with named fields (as sushy's exceptions) and never carry a secret.
"""

from __future__ import annotations

from typing import Any


class MetalformError(Exception):
    """An expected failure: shown to the user as one clear line, exit code 1."""

    template = "{message}"

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.fields = fields
        text = message if message is not None else self.template.format(**fields)
        super().__init__(text)


class InputError(MetalformError):
    """The desired state (or a config file) is invalid; `diagnostics` lists every problem."""

    def __init__(self, diagnostics: list[Any], message: str | None = None) -> None:
        self.diagnostics = diagnostics
        n = sum(1 for d in diagnostics if getattr(d.severity, "value", "") == "error")
        super().__init__(message or f"{n} error{'s' if n != 1 else ''} in the desired state")


class StalePlanError(MetalformError):
    template = "plan is stale: {why}"


class PlanRefusedError(MetalformError):
    template = "plan refused: {why}"


class ProviderError(MetalformError):
    """A live system failed. `temporary` errors are retried with `retry_after` seconds delay."""

    temporary = False
    retry_after = 0.0


class PermanentError(ProviderError):
    """Retrying will not help: wrong password, unsupported operation, bad request."""


class TemporaryError(ProviderError):
    """May succeed later: timeout, connection refused, HTTP 5xx, BMC busy."""

    temporary = True

    def __init__(self, message: str | None = None, retry_after: float = 1.0, **fields: Any):
        super().__init__(message, **fields)
        self.retry_after = retry_after


class UnreachableError(TemporaryError):
    template = "{endpoint} did not answer: {cause}"


class AuthenticationError(PermanentError):
    template = "{endpoint} refused the credentials of {credential}"


class VerificationError(PermanentError):
    template = "after {operation}, {problems}"
