"""Secret resolution, fingerprints and redaction.

Secrets are resolved only where a provider needs them to connect. Every resolved value is
registered with the process-wide `REDACTOR`, which scrubs it from logs, errors and any text
Metalform prints; a fingerprint (keyed HMAC) stands for the value wherever a change must show.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import MetalformError
from reconciler.model.credentials import SecretRef

SENSITIVE = "(sensitive)"
MAX_SECRET_FILE = 64 * 1024


class Secret:
    """A secret value that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return SENSITIVE

    __str__ = __repr__


class SecretUnavailable(MetalformError):
    template = "{what} is not set ({ref})"


class Redactor:
    """Replaces every known secret value in a text with `(sensitive)`."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        # Very short values would redact ordinary words; a BMC password is never that short
        # and a 1-3 character secret is rejected by nothing else, so keep them all.
        if value:
            with self._lock:
                self._values.add(value)

    def __call__(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, SENSITIVE)
        return text


REDACTOR = Redactor()


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs secrets from every record, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = REDACTOR(message)
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        if record.exc_text:
            record.exc_text = REDACTOR(record.exc_text)
        return True


def resolve(ref: SecretRef, *, base_dir: Path | None = None, what: str = "secret") -> Secret:
    """Read a secret from its reference; the value is registered for redaction."""
    if ref.from_env is not None:
        value = os.environ.get(ref.from_env)
        if value is None:
            raise SecretUnavailable(what=what, ref=f"environment variable {ref.from_env}")
    else:
        assert ref.from_file is not None
        path = Path(os.path.expanduser(ref.from_file))
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            if path.stat().st_size > MAX_SECRET_FILE:
                raise SecretUnavailable(f"{what}: file {ref.from_file} is larger than 64 KiB")
            value = path.read_text(encoding="utf-8").rstrip("\r\n")
        except FileNotFoundError:
            raise SecretUnavailable(what=what, ref=f"file {ref.from_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretUnavailable(
                f"{what}: cannot read {ref.from_file}: {exc.__class__.__name__}"
            ) from None
    REDACTOR.add(value)
    return Secret(value)


def fingerprint(value: Secret, key: bytes) -> str:
    """A keyed digest standing for a secret: shows that it changed, never what it is."""
    digest = hmac.new(key, value.reveal().encode(), hashlib.sha256).hexdigest()
    return "hmac-sha256:" + digest[:16]


@dataclass(frozen=True)
class ResolvedCredential:
    name: str
    username: str | None
    secret: Secret
