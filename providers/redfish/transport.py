"""The HTTP side of talking to Redfish BMCs: request slots, TLS contexts, error translation.

Every request Metalform or sushy sends to a BMC goes through `LimitedAdapter`, which holds one
of the BMC's request slots from the engine's `Limiter` for exactly the duration of the request,
uses the process's shared TLS context and turns transport failures into Metalform errors;
`translated` does the same for sushy's exceptions.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http
import json
import os
import ssl
from collections.abc import Iterator
from typing import Any

import certifi
import requests
import urllib3
from requests.adapters import HTTPAdapter
from sushy import exceptions as sushy_exc

from reconciler.concurrency import Limiter
from reconciler.errors import (
    AuthenticationError,
    PermanentError,
    ProviderError,
    TemporaryError,
    UnreachableError,
)
from reconciler.secrets import REDACTOR

RETRY_AFTER = 0.5
"""Seconds before the first retry of a temporary failure (doubled at each further one)."""


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it wraps, outermost first: urllib3 keeps the OSError in `reason`,
    requests keeps urllib3's error in args[0]; each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        first = current.args[0] if current.args else None
        current = (
            (reason if isinstance(reason, BaseException) else None)
            or current.__cause__
            or current.__context__
            or (first if isinstance(first, BaseException) else None)
        )


def transport_cause(exc: BaseException) -> str:
    """A short, secret-free cause for a transport failure."""
    for current in _causes(exc):
        if isinstance(current, ConnectionRefusedError) or (
            isinstance(current, OSError) and current.errno == errno.ECONNREFUSED
        ):
            return "connection refused"
        if isinstance(current, ConnectionResetError):
            return "connection reset by the BMC"
        if current.__class__.__name__ == "RemoteDisconnected":
            return "connection closed by the BMC without an answer"
        if current.__class__.__name__ == "NameResolutionError":
            return "the host name does not resolve"
    return f"connection failed ({exc.__class__.__name__})"


def seconds_of(timeout: Any) -> str:
    if isinstance(timeout, tuple):
        timeout = timeout[-1]
    return f"{float(timeout):g}s" if timeout is not None else "the timeout"


@functools.cache
def tls_context(verify: bool | str) -> ssl.SSLContext:
    """One client TLS context per `verify` value for the whole process.

    Without it urllib3 builds a context per connection pool (one per BMC) and loads the
    system's CA store into it (18 ms of CPU each, three quarters of a BMC's read), even when
    certificates are not verified.
    """
    if verify is False:
        # The user opted out of verification for this BMC (`verifyTls: false`), as sushy's
        # connector does: no warning per request (a site worker's log would be nothing else).
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        context = ssl.create_default_context(cafile=certifi.where())
    elif os.path.isdir(verify):
        context = ssl.create_default_context(capath=verify)
    else:
        context = ssl.create_default_context(cafile=verify)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _certificate_problem(exc: BaseException) -> bool:
    """Whether a TLS failure is about the certificate (permanent), not a closed connection."""
    for current in _causes(exc):
        if isinstance(current, ssl.SSLCertVerificationError):
            return True
        if isinstance(current, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError)):
            return False
    return True  # unknown: say so rather than retry a misconfiguration


class LimitedAdapter(HTTPAdapter):
    """An HTTP adapter that holds a limiter slot per request and classifies failures.

    Raising Metalform errors (not `requests` exceptions) from here also keeps sushy's
    connector from retrying transport failures itself with fixed sleeps; retries are done
    once, by the provider, with `context.retries`.
    """

    def __init__(self, limiter: Limiter, endpoint: str) -> None:
        super().__init__(pool_connections=1, pool_maxsize=limiter.per_endpoint, max_retries=0)
        self._limiter = limiter
        self._endpoint = endpoint

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Pools use the process's shared TLS context for this `verify` (see `tls_context`)."""
        host, pool = super().build_connection_pool_key_attributes(request, verify, cert)
        pool["ssl_context"] = tls_context(verify)
        pool.pop("ca_certs", None)
        pool.pop("ca_cert_dir", None)
        return host, pool

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)
        # The CA bundle is loaded once, in the shared context: not again per connection.
        conn.ca_certs = None
        conn.ca_cert_dir = None

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send one request while holding one of the endpoint's slots."""
        with self._limiter.slot(self._endpoint):
            try:
                return super().send(request, **kwargs)
            except requests.exceptions.SSLError as exc:
                if not _certificate_problem(exc):
                    # The connection ended mid-handshake or mid-request (a BMC under load
                    # closing it): like a reset, worth another try.
                    raise UnreachableError(
                        endpoint=self._endpoint,
                        cause=f"TLS connection closed by the BMC ({transport_cause(exc)})",
                        retry_after=RETRY_AFTER,
                    ) from None
                raise PermanentError(
                    f"{self._endpoint}: TLS handshake or certificate verification failed "
                    f"({exc.__class__.__name__}); check bmc.verifyTls and the BMC certificate"
                ) from None
            except requests.exceptions.ConnectTimeout:
                raise UnreachableError(
                    endpoint=self._endpoint,
                    cause=f"connection timed out after {seconds_of(kwargs.get('timeout'))}",
                    retry_after=RETRY_AFTER,
                ) from None
            except requests.exceptions.ReadTimeout:
                raise UnreachableError(
                    endpoint=self._endpoint,
                    cause=f"timeout: no answer within {seconds_of(kwargs.get('timeout'))}",
                    retry_after=RETRY_AFTER,
                ) from None
            except requests.exceptions.RequestException as exc:
                raise UnreachableError(
                    endpoint=self._endpoint, cause=transport_cause(exc), retry_after=RETRY_AFTER
                ) from None


def reason_phrase(status: int | None) -> str:
    try:
        return http.HTTPStatus(status or 0).phrase
    except ValueError:
        return ""


@contextlib.contextmanager
def translated(endpoint: str, credential: str) -> Iterator[None]:
    """Turn sushy's exceptions into Metalform's (temporary vs permanent, no secrets)."""
    try:
        yield
    except ProviderError:
        raise
    except sushy_exc.AccessError as exc:
        raise AuthenticationError(
            f"authentication failed: {endpoint} refused the credentials of {credential} "
            f"(HTTP {exc.status_code})"
        ) from None
    except sushy_exc.ServerSideError as exc:
        raise TemporaryError(
            REDACTOR(
                f"{endpoint} answered HTTP {exc.status_code} {reason_phrase(exc.status_code)}: "
                f"{exc.detail or 'no detail'}"
            ),
            retry_after=RETRY_AFTER,
        ) from None
    except sushy_exc.ResourceNotFoundError as exc:
        raise PermanentError(REDACTOR(f"{endpoint}: {exc}")) from None
    except sushy_exc.HTTPError as exc:
        raise PermanentError(
            REDACTOR(
                f"{endpoint} refused the request (HTTP {exc.status_code} "
                f"{reason_phrase(exc.status_code)}): {exc.detail or 'no detail'}"
            )
        ) from None
    except sushy_exc.ConnectionError as exc:
        raise UnreachableError(
            endpoint=endpoint, cause=transport_cause(exc), retry_after=RETRY_AFTER
        ) from None
    except sushy_exc.SushyError as exc:
        raise PermanentError(REDACTOR(f"{endpoint}: {exc}")) from None
    except (json.JSONDecodeError, requests.exceptions.JSONDecodeError):
        raise PermanentError(f"{endpoint} did not answer with Redfish JSON") from None


def error_detail(response: requests.Response) -> str:
    """The Redfish error message of a failed request (as sushy reports it), else its start."""
    try:
        error = json.loads(response.content).get("error", {})
        extended = error.get("@Message.ExtendedInfo") or [{}]
        message = extended[0].get("Message") or error.get("message")
        return str(message) if message else "no detail"
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.text[:200].strip() or "no detail"


def retry_after_of(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds); the default when absent or a date."""
    try:
        return max(0.0, float(value)) if value else RETRY_AFTER
    except ValueError:
        return RETRY_AFTER
