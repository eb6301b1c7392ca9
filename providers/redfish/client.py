"""Talking to Redfish BMCs: shared sessions, circuit breakers, attribute registries.

One `requests` session (and its connection pool) per BMC base URL and credential, shared by
every thread: reads use it directly, actions through a sushy root made on first use. Every
request goes through `transport.LimitedAdapter` (request slots, shared TLS, errors).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import sushy
from requests.adapters import HTTPAdapter
from sushy import exceptions as sushy_exc

from providers.journal import open_journal
from providers.redfish import passwords, uploads
from providers.redfish.registry import (
    DiskCache,
    Registries,
    RegistryKey,
    default_cache_dir,
    find_registry,
)
from providers.redfish.transport import (
    LimitedAdapter,
    error_detail,
    reason_phrase,
    retry_after_of,
    translated,
)
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
        self.login = "current"
        """Which secret of the Credential logged in: `current`, or `previous` (a rotation
        to finish)."""
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
        if status == 401 and self._root is None:
            # A BMC with basic authentication turned off: log in as sushy does (a Redfish
            # session when the service root offers one) and ask once more.
            with self.errors():
                _ = self.root
            if self.session.auth is None:  # a session token replaced basic authentication
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
        detail = error_detail(response)
        phrase = f"HTTP {status} {reason_phrase(status)}"
        if status >= 500 or status == 429:
            raise TemporaryError(
                REDACTOR(f"{self.endpoint} answered {phrase}: {detail}"),
                retry_after=retry_after_of(response.headers.get("Retry-After")),
            )
        raise PermanentError(REDACTOR(f"{self.endpoint} refused GET {path} ({phrase}): {detail}"))

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
        path = context.extra.get("redfish.uploadJournal", uploads.default_path())
        self.uploads = uploads.UploadJournal(
            open_journal(
                context,
                uploads.NAME,
                Path(str(path)) if path else None,
                keep_seconds=uploads.KEEP_SECONDS,
            )
        )
        path = context.extra.get("redfish.accountJournal", passwords.default_path())
        self.passwords = passwords.PasswordJournal(
            open_journal(context, passwords.NAME, Path(str(path)) if path else None)
        )
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
                try:
                    conn = self._connections[key] = self._connect(key)
                except AuthenticationError as exc:  # a rotation's probe: both secrets refused
                    self._refused[key] = (time.monotonic(), exc)
                    raise
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
        """A connection whose credential a BMC has accepted: one authenticated GET of the
        Systems collection (the specification fixes its path; no service root needed)."""
        conn = self._open(key, endpoint, username, secret)
        try:
            with conn.errors():
                conn.get_json(f"{ROOT_PREFIX}Systems")
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
        session.proxies = (
            requests.utils.get_environ_proxies(key.base_url) if self._proxy_env else {}
        )
        session.trust_env = False
        if self.keep_alive:
            # sushy asks every BMC to close the connection after each request; keeping the
            # few pooled connections (at most per_endpoint) saves a TCP and TLS handshake
            # per request. `redfish.keepAlive: false` restores sushy's behaviour.
            session.headers.pop("Connection", None)
        auth: Any
        if username is None:
            auth = _TokenAuth(password=secret)
            connector.set_http_session_auth(secret)
        else:
            auth = _SessionOrBasicAuth(username=username, password=secret)
            # Reads use basic authentication (every Redfish service supports it) and so need
            # no request to the service root; the sushy root, made for actions, may switch the
            # session to a Redfish session token.
            connector.set_http_basic_auth(username, secret)

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
