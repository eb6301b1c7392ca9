"""Talking to Redfish BMCs with sushy: shared sessions, request slots, errors, registries.

One sushy root (one `requests` session and its connection pool) per BMC base URL and
credential, shared by every thread. Every HTTP request sushy makes goes through
`LimitedAdapter`, which holds one of the BMC's request slots from the engine's `Limiter` for
exactly the duration of the request and turns transport failures into Metalform errors.
"""

from __future__ import annotations

import contextlib
import errno
import http
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import sushy
from requests.adapters import HTTPAdapter
from sushy import exceptions as sushy_exc

from providers.base import with_retries
from providers.redfish import mapping
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
"""A BMC that could not be connected to is not tried again for this long (others fail fast)."""
AUTH_FAILURE_FOR = 60.0
"""After a refused credential, no request is sent with it for this long (account lockouts)."""
REGISTRY_ABSENT_FOR = 300.0
"""A BMC that published no matching attribute registry is asked again after this long."""
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
    """A sushy root for one BMC and credential, shared by threads."""

    def __init__(self, key: BmcKey, endpoint: str, root: Any, auth: Any, connector: Any) -> None:
        self.key = key
        self.endpoint = endpoint
        self.root = root
        self.connector = connector
        self._auth = auth
        self.login = "current"
        """Which secret of the Credential logged in: `current`, or `previous` (a rotation
        to finish)."""

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Translate sushy exceptions raised in the block (see `translated`)."""
        return translated(self.endpoint, self.key.credential)

    def system(self, system_id: str | None) -> Any:
        """The sushy System: by Id, or the BMC's only one when `system_id` is None."""
        if system_id is None:
            members = self.root.get_system_collection().members_identities
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
            systems = self.root.json.get("Systems", {}).get("@odata.id") or f"{ROOT_PREFIX}Systems"
            path = f"{systems.rstrip('/')}/{system_id}"
        try:
            return self.root.get_system(path)
        except sushy_exc.ResourceNotFoundError:
            raise PermanentError(
                f"{self.endpoint} has no system {system_id!r} (bmc.systemId)"
            ) from None

    def get_json(self, path: str) -> dict[str, Any]:
        """GET a resource as JSON through the shared session."""
        data = self.connector.get(path).json()
        if not isinstance(data, dict):
            raise PermanentError(f"{self.endpoint}: {path} is not a Redfish resource")
        return data

    def close(self) -> None:
        """End the BMC session (if any) and close the pooled HTTP connections."""
        with contextlib.suppress(Exception):  # a BMC that is gone cannot end its session
            self._auth.close()
        self.connector.close()


def _verify(key: BmcKey) -> bool | str:
    """`verify` for requests: False, or a CA bundle named by the environment, or True."""
    if not key.verify_tls:
        return False
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True


class RedfishClient:
    """Connections and attribute registries, cached per BMC for the provider's lifetime."""

    def __init__(self, context: ProviderContext) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}
        self._connections: dict[BmcKey, BmcConnection] = {}
        self._retired: list[BmcConnection] = []
        self._down: dict[BmcKey, tuple[float, str]] = {}
        self._refused: dict[BmcKey, tuple[float, AuthenticationError]] = {}
        self._registries: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
        self.keep_alive = bool(context.extra.get("redfish.keepAlive", True))

    def _key_lock(self, key: Any) -> threading.Lock:
        with self._lock:
            lock = self._key_locks.get(key)
            if lock is None:
                lock = self._key_locks[key] = threading.Lock()
            return lock

    def connection(self, bmc: Bmc) -> BmcConnection:
        """The shared connection for a Server's BMC, created on first use."""
        key = BmcKey(base_url(bmc.address), bmc.credential, bmc.verify_tls)
        with self._key_lock(key):
            refused = self._refused.get(key)
            if refused is not None and time.monotonic() - refused[0] < AUTH_FAILURE_FOR:
                raise refused[1]
            conn = self._connections.get(key)
            if conn is not None:
                return conn
            down = self._down.get(key)
            if down is not None and time.monotonic() - down[0] < DOWN_FOR:
                raise EndpointDown(down[1])
            try:
                conn = with_retries(
                    lambda: self._connect(key),
                    retries=self._context.retries,
                    what=f"connect to {endpoint_of(key.base_url)}",
                )
            except AuthenticationError as exc:
                self._refused[key] = (time.monotonic(), exc)
                raise
            except TemporaryError as exc:
                self._down[key] = (time.monotonic(), str(exc))
                raise EndpointDown(str(exc)) from None
            self._down.pop(key, None)
            self._connections[key] = conn
            return conn

    def _connect(self, key: BmcKey) -> BmcConnection:
        endpoint = endpoint_of(key.base_url)
        try:
            credential = self._context.credential(key.credential)
        except ProviderError:
            raise
        except MetalformError as exc:  # SecretUnavailable: says which variable, never a value
            raise PermanentError(f"{endpoint}: credential {key.credential}: {exc}") from None
        if credential.previous is None:
            return self._open(key, endpoint, credential.username, credential.secret.reveal())
        # A rotation under way: the BMC may still be on the previous secret. The service root
        # needs no login, so an authenticated GET tells which secret the BMC takes.
        try:
            return self._probed(key, endpoint, credential.username, credential.secret.reveal())
        except AuthenticationError:
            pass
        try:
            conn = self._probed(key, endpoint, credential.username, credential.previous.reveal())
        except AuthenticationError:
            raise AuthenticationError(
                f"authentication failed: {endpoint} refused both the secret and the previous "
                f"secret of Credential/{key.credential}"
            ) from None
        conn.login = "previous"
        return conn

    def _probed(
        self, key: BmcKey, endpoint: str, username: str | None, secret: str
    ) -> BmcConnection:
        """A connection whose credential a BMC has accepted (the service root needs none)."""
        conn = self._open(key, endpoint, username, secret)
        try:
            with conn.errors():
                systems = conn.root.json.get("Systems", {}).get("@odata.id")
                conn.get_json(systems or f"{ROOT_PREFIX}Systems")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self, key: BmcKey, endpoint: str, username: str | None, secret: str) -> BmcConnection:
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
        session.proxies = requests.utils.get_environ_proxies(key.base_url)
        session.trust_env = False
        if self.keep_alive:
            # sushy asks every BMC to close the connection after each request; keeping the
            # few pooled connections (at most per_endpoint) saves a TCP and TLS handshake
            # per request. `redfish.keepAlive: false` restores sushy's behaviour.
            session.headers.pop("Connection", None)
        auth = (
            _TokenAuth(password=secret)
            if username is None
            else _SessionOrBasicAuth(username=username, password=secret)
        )
        try:
            with translated(endpoint, key.credential):
                root = sushy.Sushy(
                    key.base_url, root_prefix=ROOT_PREFIX, auth=auth, connector=connector
                )
        except BaseException:
            connector.close()
            raise
        return BmcConnection(key, endpoint, root, auth, connector)

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

    def attribute_registry(self, conn: BmcConnection, name: str) -> dict[str, Any] | None:
        """The BMC's attribute registry `name` as registry facts; None when not published."""
        key = (conn.endpoint, name)
        with self._key_lock(key):
            cached = self._registries.get(key)
            if cached is not None and (
                cached[1] is not None or time.monotonic() - cached[0] < REGISTRY_ABSENT_FOR
            ):
                return cached[1]
            try:
                with conn.errors():
                    facts = self._find_registry(conn, name)
            except PermanentError as exc:
                log.info("%s: no attribute registry %s: %s", conn.endpoint, name, exc)
                facts = None
            self._registries[key] = (time.monotonic(), facts)
            return facts

    def _find_registry(self, conn: BmcConnection, name: str) -> dict[str, Any] | None:
        registries = conn.root.json.get("Registries", {}).get("@odata.id")
        if not registries:
            return None
        members = [m.get("@odata.id", "") for m in conn.get_json(registries).get("Members", [])]
        stem = name.split(".", 1)[0].lower()

        def likely(path: str) -> bool:
            leaf = path.rstrip("/").rsplit("/", 1)[-1].lower()
            return "bios" in leaf or leaf.startswith(stem) or stem.startswith(leaf.split(".")[0])

        # Only the files that look like the BIOS registry are opened: message registries are
        # large and a BMC publishes dozens of them.
        for path in [m for m in members if m and likely(m)]:
            registry_file = conn.get_json(path)
            for location in registry_file.get("Location", []):
                uri = location.get("Uri")
                language = str(location.get("Language", "en")).lower()
                if not uri or language.split("-")[0] not in ("en", "default"):
                    continue
                doc = conn.get_json(uri)
                if not str(doc.get("@odata.type", "")).endswith("AttributeRegistry"):
                    continue
                names = {doc.get("Id"), registry_file.get("Id"), registry_file.get("Registry")}
                if name in names or len(members) == 1:
                    entries = doc.get("RegistryEntries", {}).get("Attributes", [])
                    return mapping.registry_facts(entries)
        return None

    def close(self) -> None:
        """End every BMC session and close the pooled connections."""
        with self._lock:
            connections = [*self._connections.values(), *self._retired]
            self._connections.clear()
            self._retired.clear()
        for conn in connections:
            conn.close()
