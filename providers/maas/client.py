"""MAAS 2.0 API calls through python-libmaas, bounded for use from worker threads.

python-libmaas's low-level "bones" API builds its handlers from the region's `describe/`
document, marshals each call (multipart bodies, `op=` query) and signs it with OAuth1
PLAINTEXT. It is asyncio code with no timeouts of its own, while the provider runs in the
engine's worker threads, holds a per-endpoint limiter slot per request and retries what is
temporary. So each `MaasClient` runs libmaas on one event loop in a thread of its own: a
worker thread takes a slot, submits the call there bounded by `asyncio.wait_for`, and gets
its answer or a classified error (`ProviderError`) back.

The API key lives only inside libmaas's session; no message, log line or repr carries it.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from maas.client.bones import CallError, SessionAPI, SessionError
from maas.client.utils.creds import Credentials

from reconciler.concurrency import Limiter
from reconciler.errors import (
    AuthenticationError,
    PermanentError,
    TemporaryError,
    UnreachableError,
)

API_PATH = "api/2.0/"
SHUTDOWN_TIMEOUT = 10.0
T = TypeVar("T")


def endpoint_of(url: str) -> str:
    """The limiter key of a MAAS region: `maas:` + scheme://host:port."""
    parts = urlsplit(url)
    return f"maas:{parts.scheme}://{parts.netloc}"


def api_root(url: str) -> str:
    """`http://host:5240/MAAS` -> `http://host:5240/MAAS/api/2.0/` (where `describe/` is)."""
    root = url if url.endswith("/") else url + "/"
    return root if root.rstrip("/").endswith("/api/2.0") else root + API_PATH


@dataclass(frozen=True)
class ApiKey:
    """A MAAS API key `consumer:token:secret`; never printed."""

    consumer: str
    token: str
    secret: str

    @classmethod
    def parse(cls, value: str) -> ApiKey:
        parts = value.strip().split(":")
        if len(parts) != 3 or not all(parts):
            # The value itself is never part of the message (libmaas's own parser quotes it).
            raise PermanentError("a MAAS API key has the form consumer:token:secret")
        return cls(*parts)

    def __repr__(self) -> str:
        return "ApiKey(sensitive)"


class EventLoopThread:
    """An asyncio event loop running in a daemon thread, started on first use.

    `run` may be called from any number of threads at once; each call is one task on the
    loop, cancelled when its timeout passes.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Await `make()` on the loop (it is called there), for at most `timeout` seconds."""

        async def bounded() -> T:
            return await asyncio.wait_for(make(), timeout)

        future: Future[T] = asyncio.run_coroutine_threadsafe(bounded(), self._running_loop())
        return future.result()

    def close(self) -> None:
        """Cancel what is still running, stop the loop and join its thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def drain() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(SHUTDOWN_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(SHUTDOWN_TIMEOUT)
            if not thread.is_alive():
                loop.close()


class MaasClient:
    """Calls to one MAAS region, each holding a slot of the region's endpoint."""

    def __init__(
        self,
        url: str,
        key: ApiKey,
        *,
        credential: str,
        limiter: Limiter,
        timeout: float,
        verify_tls: bool = True,
    ) -> None:
        self.url = url
        self.root = api_root(url)
        self.endpoint = endpoint_of(url)
        self._credentials = Credentials(key.consumer, key.token, key.secret)
        self._credential = credential
        self._limiter = limiter
        self._timeout = timeout
        self._verify_tls = verify_tls
        self._loop = EventLoopThread(f"maas {urlsplit(url).netloc}")
        self._session: SessionAPI | None = None
        self._session_lock = threading.Lock()

    # -- libmaas -----------------------------------------------------------------------------

    def session(self) -> Any:
        """libmaas's session, built once from the region's API description."""
        with self._session_lock:
            if self._session is None:
                self._session = self._bounded(
                    lambda: SessionAPI.fromURL(
                        self.root, credentials=self._credentials, insecure=not self._verify_tls
                    ),
                    what="GET describe/",
                )
            return self._session

    def call(self, handler: str, action: str, **data: Any) -> Any:
        """One API call, e.g. `call("Machine", "deploy", system_id=..., distro_series=...)`.

        Arguments naming a URI parameter of the handler (`system_id`, a tag's `name`) go in
        the path; the others are the query (GET) or the multipart body.
        """
        bound = getattr(getattr(self.session(), handler, None), action, None)
        if bound is None:
            raise PermanentError(f"{self.url}: the MAAS API description has no {handler}.{action}")
        return self._bounded(lambda: bound(**data), what=f"{handler}.{action}")

    def _bounded(self, make: Callable[[], Awaitable[T]], *, what: str) -> T:
        """Run one libmaas coroutine under a limiter slot and the timeout; classify failures."""
        with self._limiter.slot(self.endpoint):
            try:
                return self._loop.run(make, self._timeout)
            except CallError as exc:
                raise self._http_error(exc, what) from None
            except TimeoutError:
                raise UnreachableError(
                    endpoint=self.url, cause=f"no answer within {self._timeout:g}s"
                ) from None
            except aiohttp.ClientConnectorError as exc:
                raise UnreachableError(
                    endpoint=self.url, cause=_connection_cause(exc.os_error)
                ) from None
            except aiohttp.ClientError as exc:
                raise TemporaryError(f"{self.url}: {what}: {exc.__class__.__name__}") from None
            except SessionError as exc:
                # "<url> -> 404 Not Found" or a wrong content type: not a MAAS API root.
                raise PermanentError(f"{self.url} is not a MAAS 2.0 API: {exc}") from None

    def _http_error(self, exc: CallError, what: str) -> Exception:
        status = exc.status
        if status in (401, 403):
            return AuthenticationError(
                endpoint=self.url, credential=f"Credential/{self._credential}"
            )
        if status >= 500 or status == 429:
            return TemporaryError(f"{self.url}: HTTP {status} for {what}")
        content = exc.content.decode("utf-8", "replace")[:200]
        return PermanentError(f"{self.url}: {what}: HTTP {status} {content}")

    # -- the calls the provider makes --------------------------------------------------------

    def machines(self, hostnames: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every machine (or those with one of `hostnames`), in one request."""
        result = self.call(
            "Machines", "read", **({"hostname": list(hostnames)} if hostnames else {})
        )
        if not isinstance(result, list):
            raise PermanentError(f"{self.url}: machines/ did not answer a list")
        return result

    def machine(self, system_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("Machine", "read", system_id=system_id)
        return result

    def power_parameters(self, system_id: str) -> dict[str, Any]:
        """How MAAS reaches the machine's BMC. The password in it is a secret: callers keep
        the address and type only (admin rights are needed; others get HTTP 403)."""
        result = self.call("Machine", "power_parameters", system_id=system_id)
        if not isinstance(result, dict):
            raise PermanentError(f"{self.url}: power_parameters did not answer an object")
        return result

    def machine_op(self, system_id: str, op: str, **data: str) -> dict[str, Any]:
        """`commission`, `deploy`, `release`, ... of one machine."""
        result: dict[str, Any] = self.call("Machine", op, system_id=system_id, **data)
        return result

    def deploy(
        self, system_id: str, *, user_data: str | None, distro_series: str | None
    ) -> dict[str, Any]:
        data: dict[str, str] = {}
        if user_data is not None:
            data["user_data"] = base64.b64encode(user_data.encode()).decode()
        if distro_series:
            data["distro_series"] = distro_series
        return self.machine_op(system_id, "deploy", **data)

    def set_description(self, system_id: str, description: str) -> None:
        self.call("Machine", "update", system_id=system_id, description=description)

    def tags(self) -> list[str]:
        return [t["name"] for t in self.call("Tags", "read")]

    def create_tag(self, name: str) -> None:
        self.call("Tags", "create", name=name, comment="managed by Metalform")

    def update_tag_nodes(
        self, name: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> None:
        self.call("Tag", "update_nodes", name=name, add=list(add), remove=list(remove))

    def close(self) -> None:
        self._loop.close()


def _connection_cause(error: OSError) -> str:
    if isinstance(error, socket.gaierror):
        return "unknown host"
    if error.errno == errno.ECONNREFUSED:
        return "connection refused"
    return error.strerror or error.__class__.__name__
