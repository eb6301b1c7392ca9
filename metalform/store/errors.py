"""Failures of the state store."""

from __future__ import annotations

from reconciler.errors import MetalformError


class StoreError(MetalformError):
    """The state store failed or was misused."""


class NotFoundError(StoreError):
    """No such plan, apply or action."""

    template = "{what} {id} not found"


class ConflictError(StoreError):
    """The request does not fit the current state (a finished plan cannot start again, ...)."""
