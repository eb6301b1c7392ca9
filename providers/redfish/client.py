"""Talking to Redfish BMCs with sushy: shared sessions, request slots, errors, registries.

One sushy root (one `requests` session and its connection pool) per BMC base URL and
credential, shared by every thread. Every HTTP request sushy makes goes through
`LimitedAdapter`, which holds one of the BMC's request slots from the engine's `Limiter` for
exactly the duration of the request and turns transport failures into Metalform errors.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import http
import json
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import requests
import sushy
from requests.adapters import HTTPAdapter
from sushy import exceptions as sushy_exc

from providers.redfish.registry import (
    DiskCache,
    Registries,
    RegistryKey,
    default_cache_dir,
    find_registry,
)
from reconciler.concurrency import Limiter
from reconciler.errors import (
    AuthenticationError,
    MetalformError,
    PermanentError,
    ProviderError,
    TemporaryError,
    UnreachableError,
)
from reconciler.model.hardware import Bmc
from reconciler.provider import ProviderContext
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.providers.redfish")

RETRY_AFTER = 0.5
"""Seconds before the first retry of a temporary failure (doubled at each further one)."""
DOWN_FOR = 5.0
"""Circuit breaker: a BMC that did not answer is not tried again for this long; the callers
that want it meanwhile fail at once instead of each waiting for their own timeout."""
AUTH_FAILURE_FOR = 60.0
"""After a refused credential, no request is sent with it for this long (account lockouts)."""
WARM_CONNECTIONS = 256
"""BMCs whose connections stay open after a read (the most recently read ones)."""
ROOT_PREFIX = "/redfish/v1/"


def base_url(address: str) -> str:
    """A Server's `bmc.address` as a canonical base URL (`https://host:port`)."""
    parts = urlsplit(address.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"bmc.address {address!r} is not an http(s) URL")
    if parts.username or parts.password:
        # The password would end up in logs and plans; credentials come from a Credential.
        raise PermanentError("bmc.address must not contain a user name or password")
    netloc = parts.netloc.lower()
    path = parts.path.rstrip("/")
    if path.lower().endswith("/redfish/v1"):
        path = path[: -len("/redfish/v1")]
    return f"{parts.scheme}://{netloc}{path}"


def endpoint_of(address: str) -> str:
    """The limiter endpoint of a BMC: `redfish:` + its base URL."""
    return "redfish:" + base_url(address)


class NotFound(PermanentError):
    """The BMC answered 404 for a resource."""


class EndpointDown(ProviderError):
    """Connecting to a BMC failed after retries; later callers get this without retrying."""


def _cause(exc: BaseException) -> str:
    """A short, secret-free cause for a transport failure."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
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
        # urllib3 wraps the OSError in `reason`, requests wraps urllib3's error in args[0].
        reason = getattr(current, "reason", None)
        first = current.args[0] if current.args else None
        current = (
            (reason if isinstance(reason, BaseException) else None)
            or current.__cause__
            or current.__context__
            or (first if isinstance(first, BaseException) else None)
        )
    return f"connection failed ({exc.__class__.__name__})"


def _seconds(timeout: Any) -> str:
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
                raise PermanentError(
                    f"{self._endpoint}: TLS handshake or certificate verification failed "
                    f"({exc.__class__.__name__}); check bmc.verifyTls and the BMC certificate"
                ) from None
            except requests.exceptions.ConnectTimeout:
                raise UnreachableError(
                    endpoint=self._endpoint,
                    cause=f"connection timed out after {_seconds(kwargs.get('timeout'))}",
                    retry_after=RETRY_AFTER,
                ) from None
            except requests.exceptions.ReadTimeout:
                raise UnreachableError(
                    endpoint=self._endpoint,
                    cause=f"timeout: no answer within {_seconds(kwargs.get('timeout'))}",
                    retry_after=RETRY_AFTER,
                ) from None
            except requests.exceptions.RequestException as exc:
                raise UnreachableError(
                    endpoint=self._endpoint, cause=_cause(exc), retry_after=RETRY_AFTER
                ) from None


def _reason(status: int | None) -> str:
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
                f"{endpoint} answered HTTP {exc.status_code} {_reason(exc.status_code)}: "
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
                f"{_reason(exc.status_code)}): {exc.detail or 'no detail'}"
            )
        ) from None
    except sushy_exc.ConnectionError as exc:
        raise UnreachableError(
            endpoint=endpoint, cause=_cause(exc), retry_after=RETRY_AFTER
        ) from None
    except sushy_exc.SushyError as exc:
        raise PermanentError(REDACTOR(f"{endpoint}: {exc}")) from None
    except (json.JSONDecodeError, requests.exceptions.JSONDecodeError):
        raise PermanentError(f"{endpoint} did not answer with Redfish JSON") from None


class _SessionOrBasicAuth(sushy.auth.SessionOrBasicAuth):  # type: ignore[misc]
    """sushy's session-then-basic authentication, minus the probe of a missing service.

    sushy tries to create a session even when the service root links no SessionService,
    logs that as an authentication ERROR and falls back to basic auth; a BMC without
    sessions (sushy-emulator among them) therefore costs a refused POST and a misleading
    log line per connection.
    """

    def _do_authenticate(self) -> None:
        if "SessionService" not in (self._root_resource.json or {}):
            self._fallback_to_basic_authentication()
        else:
            super()._do_authenticate()


class _TokenAuth(sushy.auth.AuthBase):  # type: ignore[misc]
    """A `token` Credential: sent as X-Auth-Token (a pre-issued Redfish session token)."""

    def _do_authenticate(self) -> None:
        self._connector.set_http_session_auth(self._password)

    def can_refresh_session(self) -> bool:
        return False


@dataclass(frozen=True)
class BmcKey:
    base_url: str
    credential: str
    verify_tls: bool


class BmcConnection:
    """One BMC and credential: a `requests` session shared by threads, and a sushy root.

    Reads go straight to the resources they need with the session (the system path is known,
    nothing is rediscovered) and parse only JSON; the sushy root, which costs a request to the
    service root and builds sushy's resource objects, is made on first use by the actions.
    """

    def __init__(
        self,
        key: BmcKey,
        endpoint: str,
        connector: Any,
        make_root: Callable[[], Any],
        auth: Any,
    ) -> None:
        self.key = key
        self.endpoint = endpoint
        self.connector = connector
        self.session: requests.Session = connector._session
        self.verify = _verify(key)
        self._make_root = make_root
        self._root: Any = None
        self._root_lock = threading.Lock()
        self._auth = auth
        self.system_paths: dict[str | None, str] = {}

    @property
    def root(self) -> Any:
        """The sushy root of the BMC (GET of the service root, authentication), made once."""
        with self._root_lock:
            if self._root is None:
                self._root = self._make_root()
            return self._root

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Translate sushy exceptions raised in the block (see `translated`)."""
        return translated(self.endpoint, self.key.credential)

    def system_path(self, system_id: str | None, timeout: float | None = None) -> str:
        """The path of the System: from `bmc.systemId`, or the BMC's only one (asked once)."""
        path = self.system_paths.get(system_id)
        if path is not None:
            return path
        if system_id is None:
            members = [
                m.get("@odata.id", "")
                for m in self.get_json(f"{ROOT_PREFIX}Systems", timeout).get("Members", [])
            ]
            if len(members) != 1:
                raise PermanentError(
                    f"{self.endpoint} has {len(members)} systems; set bmc.systemId to one of "
                    f"{', '.join(sorted(m.rstrip('/').rsplit('/', 1)[-1] for m in members))}"
                    if members
                    else f"{self.endpoint} has no systems"
                )
            path = members[0]
        elif system_id.startswith("/"):
            path = system_id
        else:
            # The specification fixes the collection at /redfish/v1/Systems.
            path = f"{ROOT_PREFIX}Systems/{system_id}"
        self.system_paths[system_id] = path
        return path

    def system(self, system_id: str | None) -> Any:
        """The sushy System (for actions)."""
        path = self.system_path(system_id)
        try:
            return self.root.get_system(path)
        except sushy_exc.ResourceNotFoundError:
            raise PermanentError(
                f"{self.endpoint} has no system {system_id!r} (bmc.systemId)"
            ) from None

    def get_json(self, path: str, timeout: float | None = None) -> dict[str, Any]:
        """GET a resource as JSON through the shared session; failures as Metalform errors."""
        response = self.session.get(
            self.key.base_url + path,
            timeout=timeout or self.connector._default_request_timeout,
            verify=self.verify,
        )
        status = response.status_code
        if status == 200:
            try:
                data = json.loads(response.content)
            except ValueError:
                raise PermanentError(f"{self.endpoint} did not answer with Redfish JSON") from None
            if not isinstance(data, dict):
                raise PermanentError(f"{self.endpoint}: {path} is not a Redfish resource")
            return data
        if status in (401, 403):
            raise AuthenticationError(
                f"authentication failed: {self.endpoint} refused the credentials of "
                f"{self.key.credential} (HTTP {status})"
            )
        if status == 404:
            raise NotFound(f"{self.endpoint}: {path} was not found (HTTP 404)")
        # A BMC may quote the request in its error, credentials included: redacted.
        detail = _detail(response)
        if status >= 500 or status == 429:
            raise TemporaryError(
                REDACTOR(f"{self.endpoint} answered HTTP {status} {_reason(status)}: {detail}"),
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        raise PermanentError(
            REDACTOR(
                f"{self.endpoint} refused GET {path} (HTTP {status} {_reason(status)}): {detail}"
            )
        )

    def release(self) -> None:
        """Close the pooled (idle) connections; the next request opens a new one."""
        for adapter in self.session.adapters.values():
            if isinstance(adapter, HTTPAdapter):
                adapter.poolmanager.clear()

    def close(self) -> None:
        """End the BMC session (if any) and close the pooled HTTP connections."""
        if self._root is not None:
            with contextlib.suppress(Exception):  # a BMC that is gone cannot end its session
                self._auth.close()
        self.connector.close()


def _detail(response: requests.Response) -> str:
    """The Redfish error message of a failed request (as sushy reports it), else its start."""
    try:
        error = json.loads(response.content).get("error", {})
        extended = error.get("@Message.ExtendedInfo") or [{}]
        message = extended[0].get("Message") or error.get("message")
        return str(message) if message else "no detail"
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.text[:200].strip() or "no detail"


def _retry_after(value: str | None) -> float:
    """Seconds from a Retry-After header (delta-seconds); the default when absent or a date."""
    try:
        return max(0.0, float(value)) if value else RETRY_AFTER
    except ValueError:
        return RETRY_AFTER


def _verify(key: BmcKey) -> bool | str:
    """`verify` for requests: False, or a CA bundle named by the environment, or True."""
    if not key.verify_tls:
        return False
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


class RedfishClient:
    """Connections, circuit breakers and attribute registries for the provider's lifetime."""

    def __init__(self, context: ProviderContext) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}
        self._connections: dict[BmcKey, BmcConnection] = {}
        self._retired: list[BmcConnection] = []
        self._down: dict[BmcKey, tuple[float, str]] = {}
        self._refused: dict[BmcKey, tuple[float, AuthenticationError]] = {}
        cache = context.extra.get("redfish.registryCache", default_cache_dir())
        self.registries = Registries(DiskCache(Path(str(cache)) if cache else None))
        self.keep_alive = bool(context.extra.get("redfish.keepAlive", True))
        self._warm: OrderedDict[BmcKey, BmcConnection] = OrderedDict()
        self.warm_limit = int(context.extra.get("redfish.warmConnections", WARM_CONNECTIONS))  # type: ignore[call-overload]
        # Reading the proxy environment costs half a millisecond per BMC; most have none.
        self._proxy_env = any(name.lower().endswith("_proxy") for name in os.environ)

    def _key_lock(self, key: Any) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(key)
            if lock is None:
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def connection(self, bmc: Bmc) -> BmcConnection:
        """The shared connection for a Server's BMC, created on first use (no request yet).

        Raises at once while the BMC's circuit is open (it did not answer recently) or its
        credential was refused, so that one dead BMC costs one timeout, not one per caller.
        """
        key = BmcKey(base_url(bmc.address), bmc.credential, bmc.verify_tls)
        with self._key_lock(key):
            refused = self._refused.get(key)
            if refused is not None and time.monotonic() - refused[0] < AUTH_FAILURE_FOR:
                raise refused[1]
            down = self._down.get(key)
            if down is not None and time.monotonic() - down[0] < DOWN_FOR:
                raise EndpointDown(down[1])
            conn = self._connections.get(key)
            if conn is None:
                conn = self._connections[key] = self._connect(key)
            return conn

    def used(self, conn: BmcConnection) -> None:
        """Note a finished read: the connections of the least recently used BMCs beyond
        `warm_limit` are closed, so that a fleet of thousands does not hold a socket (and its
        TLS state) per BMC until the end of the run."""
        with self._lock:
            self._warm[conn.key] = conn
            self._warm.move_to_end(conn.key)
            cold = (
                [
                    self._warm.popitem(last=False)[1]
                    for _ in range(len(self._warm) - self.warm_limit)
                ]
                if len(self._warm) > self.warm_limit
                else []
            )
        for old in cold:
            old.release()

    def trip(self, bmc: Bmc, error: UnreachableError) -> None:
        """Open the BMC's circuit: it did not answer within its deadline and retries."""
        key = BmcKey(base_url(bmc.address), bmc.credential, bmc.verify_tls)
        self._down[key] = (time.monotonic(), str(error))

    def _connect(self, key: BmcKey) -> BmcConnection:
        endpoint = endpoint_of(key.base_url)
        try:
            credential = self._context.credential(key.credential)
        except ProviderError:
            raise
        except MetalformError as exc:  # SecretUnavailable: says which variable, never a value
            raise PermanentError(f"{endpoint}: credential {key.credential}: {exc}") from None
        connector = sushy.connector.Connector(
            key.base_url,
            verify=_verify(key),
            # Retries are the provider's (context.retries); sushy's own would sleep 2-3 s.
            server_side_retries=0,
            default_request_timeout=self._context.timeout,
        )
        adapter = LimitedAdapter(self._context.limiter, endpoint)
        session = connector._session
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # requests re-reads the proxy environment on every request (a third of a millisecond
        # of CPU each); read it once per BMC instead.
        session.proxies = (
            requests.utils.get_environ_proxies(key.base_url) if self._proxy_env else {}
        )
        session.trust_env = False
        if self.keep_alive:
            # sushy asks every BMC to close the connection after each request; keeping the
            # few pooled connections (at most per_endpoint) saves a TCP and TLS handshake
            # per request. `redfish.keepAlive: false` restores sushy's behaviour.
            session.headers.pop("Connection", None)
        secret = credential.secret.reveal()
        auth: Any
        if credential.username is None:
            auth = _TokenAuth(password=secret)
            connector.set_http_session_auth(secret)
        else:
            auth = _SessionOrBasicAuth(username=credential.username, password=secret)
            # Reads use basic authentication (every Redfish service supports it) and so need
            # no request to the service root; the sushy root, made for actions, may switch the
            # session to a Redfish session token.
            connector.set_http_basic_auth(credential.username, secret)

        def make_root() -> Any:
            with translated(endpoint, key.credential):
                return sushy.Sushy(
                    key.base_url, root_prefix=ROOT_PREFIX, auth=auth, connector=connector
                )

        return BmcConnection(key, endpoint, connector, make_root, auth)

    def note_failure(self, conn: BmcConnection, error: ProviderError) -> None:
        """Remember what a failure says about the connection it happened on."""
        if isinstance(error, AuthenticationError):
            # Until AUTH_FAILURE_FOR has passed, no request is sent with this credential.
            self._refused[conn.key] = (time.monotonic(), error)
            self.evict(conn)
        elif isinstance(error, UnreachableError):
            # The next user reconnects (one caller probes, the others wait for its verdict).
            self.evict(conn)

    def evict(self, conn: BmcConnection) -> None:
        """Forget a connection; the next user of its BMC opens a new one."""
        with self._lock:
            if self._connections.get(conn.key) is conn:
                del self._connections[conn.key]
                # Other threads may still be using it: closed with the rest in close().
                self._retired.append(conn)

    def attribute_registry(
        self, conn: BmcConnection, name: str, manufacturer: str, model: str, timeout: float
    ) -> dict[str, Any] | None:
        """The attribute registry `name` as registry facts (shared by every BMC of the model,
        kept on disk); None when the BMC does not publish it."""

        def fetch() -> dict[str, Any] | None:
            try:
                return find_registry(lambda path: conn.get_json(path, timeout), name)
            except PermanentError as exc:
                log.info("%s: no attribute registry %s: %s", conn.endpoint, name, exc)
                return None

        key = RegistryKey(name, manufacturer or "", model or "")
        facts: dict[str, Any] | None = self.registries.get(key, conn.endpoint, fetch)
        return facts

    def close(self) -> None:
        """End every BMC session and close the pooled connections."""
        with self._lock:
            connections = [*self._connections.values(), *self._retired]
            self._connections.clear()
            self._retired.clear()
        for conn in connections:
            conn.close()
