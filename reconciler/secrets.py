"""Secret resolution, fingerprints and redaction.

Secrets are resolved only where a provider needs them to connect. Every resolved value is
registered with the process-wide `REDACTOR`, which scrubs it from logs, errors and any text
Metalform prints; a fingerprint (keyed HMAC) stands for the value wherever a change must show.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

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


def _base64_forms(raw: bytes) -> set[str]:
    """`raw` in standard and URL-safe base64, with and without padding."""
    forms: set[str] = set()
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms.update((text, text.rstrip("=")))
    return forms


def encodings(value: str) -> set[str]:
    """The forms in which a secret travels and may come back in someone's error text: raw,
    URL-encoded (query strings, form bodies, URLs), JSON-escaped (a JSON body quoting it)
    and base64 (tokens, `Basic` credentials)."""
    forms = {
        value,
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }
    return forms | _base64_forms(value.encode("utf-8"))


def login_encodings(username: str, secret: str) -> set[str]:
    """The forms of a `username:secret` pair: what HTTP Basic sends in `Authorization`, which
    a BMC may echo in its error body. The pair is encoded as a whole, so the base64 of the
    secret alone does not show in it."""
    return _base64_forms(f"{username}:{secret}".encode())


MIN_ENCODED = 8
"""Shortest encoded form of a secret the redactor replaces (the raw value: any length)."""


class Redactor:
    """Replaces every known secret value, in every encoding of it, with `(sensitive)`."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        """Know `value` and its encodings (see `encodings`)."""
        # The value itself is always known, however short (so a 3-letter test secret
        # redacts those letters from every later text of the process: tests use long
        # values). Its encodings are known from MIN_ENCODED characters on: the base64 of a
        # two-byte value is three letters that ordinary words contain ("in flight").
        if value:
            self._extend({value} | {f for f in encodings(value) if len(f) >= MIN_ENCODED})

    def add_login(self, username: str | None, secret: str) -> None:
        """Know a secret and, with its username, the `Basic` credentials they make."""
        self.add(secret)
        if username and secret:
            self._extend({f for f in login_encodings(username, secret) if len(f) >= MIN_ENCODED})

    def _extend(self, forms: set[str]) -> None:
        with self._lock:
            self._values.update(form for form in forms if form)

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
    previous: Secret | None = None
    """The secret before a rotation (`Credential.spec.previous`), for BMCs still on it."""

    def __post_init__(self) -> None:
        # Whoever builds one is about to log in with it: from here on the redactor knows the
        # pair in the forms a client sends it (an `Authorization: Basic` header echoed back).
        REDACTOR.add_login(self.username, self.secret.reveal())
        if self.previous is not None:
            REDACTOR.add_login(self.username, self.previous.reveal())
