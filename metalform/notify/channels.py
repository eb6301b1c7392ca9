"""Where messages go: a webhook (JSON POST), a Slack incoming webhook, or email over SMTP.

A channel's `send` delivers one message or raises `TemporaryError` (worth retrying: timeouts,
refused connections, HTTP 5xx and 429, SMTP 4xx) or `PermanentError` (HTTP 4xx, SMTP 5xx,
refused credentials, a secret that is not set). Error messages name the channel, and the URL
only when it is written in Git: a URL given as a secret reference (a Slack webhook URL is a
credential) never appears in a message, a log line or an exception, so errors from the HTTP
library, which quote the URL, are described by their class instead of their text.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from reconciler.errors import PermanentError, ProviderError, TemporaryError
from reconciler.model.credentials import SecretRef
from reconciler.model.notifications import ChannelType
from reconciler.secrets import REDACTOR, ResolvedCredential, Secret, SecretUnavailable

SecretResolver = Callable[[SecretRef], Secret]
CredentialResolver = Callable[[str], ResolvedCredential]

DEFAULT_TIMEOUT = 10.0
MAX_RETRY_AFTER = 30.0
"""Longest Retry-After honoured; a longer one is retried at this delay (or gives up)."""
USER_AGENT = "metalform-notify/1"
SUBJECT_PREFIX = "[metalform] "
MIN_SECRET_PIECE = 8
"""Shortest part of a secret URL (path, query) registered for redaction on its own: shorter
ones (`/`, `/hook`) would redact ordinary text and are no secret by themselves."""
TEMPORARY_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Message:
    """One message for one channel: already rendered and redacted."""

    rule: str
    channel: str
    subject: str
    text: str
    event: Mapping[str, Any] | None = None
    """The event's data (redacted), for webhook receivers that want more than text."""
    digest: Mapping[str, Any] | None = None
    """For a digest: how many events were held back and a summary of each."""
    headers: Mapping[str, str] = field(default_factory=dict)

    def webhook_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "rule": self.rule,
            "channel": self.channel,
            "subject": self.subject,
            "text": self.text,
        }
        if self.event is not None:
            body["event"] = dict(self.event)
        if self.digest is not None:
            body["digest"] = dict(self.digest)
        return body


class Channel(Protocol):
    """A destination of messages."""

    name: str
    type: ChannelType

    def send(self, message: Message) -> None:
        """Deliver one message; raise TemporaryError or PermanentError when that fails."""
        ...

    def close(self) -> None: ...


class HttpChannel:
    """A webhook (`{"rule", "channel", "subject", "text", "event"|"digest"}` as JSON) or a
    Slack-compatible incoming webhook (`{"text": ...}`)."""

    def __init__(
        self,
        name: str,
        type: ChannelType,
        url: str | SecretRef,
        *,
        resolve_secret: SecretResolver,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        register_secret: Callable[[str], None] = REDACTOR.add,
    ) -> None:
        if type not in (ChannelType.WEBHOOK, ChannelType.SLACK):
            raise ValueError(f"an HTTP channel is a webhook or slack channel, not {type.value}")
        self.name = name
        self.type: ChannelType = type
        self._url = url
        self._resolve_secret = resolve_secret
        self._register_secret = register_secret
        self._session = session or requests.Session()
        self._own_session = session is None
        self.timeout = timeout

    @property
    def secret_url(self) -> bool:
        return isinstance(self._url, SecretRef)

    def describe(self) -> str:
        """How messages name this channel: its URL only when that is no secret."""
        where = f" ({self._url})" if isinstance(self._url, str) else ""
        return f"{self.type.value} channel {self.name}{where}"

    def url(self) -> str:
        """The URL, resolving a secret reference only now (and every time: it may rotate)."""
        if isinstance(self._url, str):
            return self._url
        try:
            url = self._resolve_secret(self._url).reveal()
        except SecretUnavailable as exc:
            raise PermanentError(f"{self.describe()}: its url {exc}") from None
        # The whole URL is registered for redaction by the resolver; HTTP libraries log
        # its path and query on their own (urllib3 at debug level), and those hold the token.
        parts = urlsplit(url)
        for piece in (parts.path, parts.query, parts.path + "?" + parts.query):
            if len(piece) >= MIN_SECRET_PIECE:
                self._register_secret(piece)
        return url

    def payload(self, message: Message) -> dict[str, Any]:
        if self.type is ChannelType.SLACK:
            return {"text": message.text}
        return message.webhook_json()

    def send(self, message: Message) -> None:
        url = self.url()
        headers = {"User-Agent": USER_AGENT, **message.headers}
        try:
            response = self._session.post(
                url,
                json=self.payload(message),
                headers=headers,
                timeout=self.timeout,
                # A redirect would send the message somewhere Git does not name.
                allow_redirects=False,
            )
        except requests.Timeout:
            raise TemporaryError(f"{self.describe()}: no answer within {self.timeout:g}s") from None
        except requests.ConnectionError:
            raise TemporaryError(f"{self.describe()}: connection failed") from None
        except requests.RequestException as exc:
            # The library's text quotes the URL; its class says enough.
            raise PermanentError(f"{self.describe()}: {type(exc).__name__}") from None
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return
        if status in TEMPORARY_HTTP:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise TemporaryError(f"{self.describe()}: HTTP {status}", retry_after=retry_after)
        raise PermanentError(f"{self.describe()}: HTTP {status}")

    def close(self) -> None:
        if self._own_session:
            self._session.close()


@dataclass(frozen=True)
class SmtpEndpoint:
    """Where an smtp Provider's `url` points: `smtp://host[:25]` or `smtps://host[:465]`."""

    host: str
    port: int
    implicit_tls: bool

    @classmethod
    def parse(cls, url: str) -> SmtpEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(
                f"an smtp Provider's url is smtp://HOST[:PORT] or smtps://HOST[:PORT], not {url!r}"
            )
        if parts.username or parts.password:
            raise ValueError(
                "an smtp Provider's url takes no user or password; name a Credential instead"
            )
        implicit = parts.scheme == "smtps"
        try:
            port = parts.port or (465 if implicit else 25)
        except ValueError:
            raise ValueError(f"{url!r} has an invalid port") from None
        return cls(parts.hostname, port, implicit)

    def __str__(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


class EmailChannel:
    """Email through an smtp Provider. With a Credential the session must be encrypted
    (STARTTLS, or `smtps://`) before the password is sent; without one it is a plain relay,
    as a local MTA on loopback usually is."""

    type: ChannelType = ChannelType.EMAIL

    def __init__(
        self,
        name: str,
        *,
        endpoint: SmtpEndpoint,
        sender: str,
        recipients: Sequence[str],
        provider: str,
        credential: str | None = None,
        resolve_credential: CredentialResolver | None = None,
        verify_tls: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if credential is not None and resolve_credential is None:
            raise ValueError("a credential needs a resolver")
        self.name = name
        self.endpoint = endpoint
        self.sender = sender
        self.recipients = tuple(recipients)
        self.provider = provider
        self.credential = credential
        self._resolve_credential = resolve_credential
        self.verify_tls = verify_tls
        self.timeout = timeout

    def describe(self) -> str:
        return f"email channel {self.name} (Provider/{self.provider} {self.endpoint})"

    def email(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = SUBJECT_PREFIX + message.subject
        mail["From"] = self.sender
        mail["To"] = ", ".join(self.recipients)
        mail["Date"] = formatdate(localtime=False, usegmt=True)
        mail["Message-ID"] = make_msgid(domain="metalform.invalid")
        mail["X-Metalform-Rule"] = message.rule
        for key, value in message.headers.items():
            mail[key] = value
        mail.set_content(message.text + "\n")
        return mail

    def send(self, message: Message) -> None:
        mail = self.email(message)
        login = self._login()
        try:
            with self._connect() as smtp:
                if login is not None:
                    if not self.endpoint.implicit_tls:
                        smtp.ehlo()
                        if not smtp.has_extn("starttls"):
                            raise PermanentError(
                                f"{self.describe()}: the server offers no STARTTLS; "
                                "the credential is not sent unencrypted"
                            )
                        smtp.starttls(context=self._tls_context())
                        smtp.ehlo()
                    smtp.login(login.username or "", login.secret.reveal())
                refused = smtp.send_message(mail)
        except ProviderError:
            raise
        except smtplib.SMTPAuthenticationError:
            raise PermanentError(
                f"{self.describe()}: the server refused the credentials of "
                f"Credential/{self.credential}"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            error_class = TemporaryError if all(400 <= c < 500 for c in codes) else PermanentError
            raise error_class(
                f"{self.describe()}: every recipient was refused (SMTP {codes})"
            ) from None
        except smtplib.SMTPResponseException as exc:
            error_class = TemporaryError if 400 <= exc.smtp_code < 500 else PermanentError
            raise error_class(f"{self.describe()}: SMTP {exc.smtp_code}") from None
        except smtplib.SMTPNotSupportedError:
            raise PermanentError(
                f"{self.describe()}: the server lacks a needed extension"
            ) from None
        except ssl.SSLError as exc:
            raise PermanentError(
                f"{self.describe()}: TLS failed ({exc.reason or 'SSL error'})"
            ) from None
        except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError):
            raise TemporaryError(f"{self.describe()}: the server closed the connection") from None
        except TimeoutError:
            raise TemporaryError(f"{self.describe()}: no answer within {self.timeout:g}s") from None
        except ConnectionRefusedError:
            raise TemporaryError(f"{self.describe()}: connection refused") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryError(f"{self.describe()}: {type(exc).__name__}") from None
        if refused:
            # Some recipients got it: retrying would send duplicates to the others.
            raise PermanentError(
                f"{self.describe()}: {len(refused)} of {len(self.recipients)} recipient(s) refused"
            )

    def _login(self) -> ResolvedCredential | None:
        if self.credential is None or self._resolve_credential is None:
            return None
        try:
            return self._resolve_credential(self.credential)
        except SecretUnavailable as exc:
            raise PermanentError(f"{self.describe()}: {exc}") from None
        except ProviderError:
            raise
        except Exception as exc:  # a resolver for a missing Credential raises MetalformError
            raise PermanentError(f"{self.describe()}: {type(exc).__name__}: {exc}") from None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.verify_tls:
            # The Provider says so (verifyTls: false): a lab relay with a self-signed cert.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _connect(self) -> smtplib.SMTP:
        # A fixed local name: smtplib's default asks DNS for this host's FQDN, which can
        # stall for seconds on a machine without a resolver.
        if self.endpoint.implicit_tls:
            return smtplib.SMTP_SSL(
                self.endpoint.host,
                self.endpoint.port,
                local_hostname="localhost",
                timeout=self.timeout,
                context=self._tls_context(),
            )
        return smtplib.SMTP(
            self.endpoint.host,
            self.endpoint.port,
            local_hostname="localhost",
            timeout=self.timeout,
        )

    def close(self) -> None:
        """Nothing is kept open between messages."""


def _retry_after(value: str | None) -> float:
    """Seconds from an HTTP Retry-After header (seconds form only; dates are rare here)."""
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        return 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
