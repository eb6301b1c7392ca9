"""One Docker engine: a reused docker SDK client, every request under the endpoint's limit.

Failures become Metalform's errors: an engine that does not answer is `UnreachableError`
(health Unreachable, never drift), a refused request `PermanentError`, a 5xx `TemporaryError`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from providers.docker.mapping import MANAGED_LABEL, RESOURCE_KEY
from reconciler.concurrency import Limiter
from reconciler.errors import PermanentError, TemporaryError, UnreachableError

T = TypeVar("T")

UNIX_PATH_MAX = 107
"""Longest socket path the kernel accepts (sun_path is 108 bytes with the final NUL)."""

STOP_TIMEOUT = 10
"""Seconds a container gets to exit after SIGTERM before Docker kills it (Docker's default)."""


class ContainerConflict(PermanentError):
    """The engine refused a request because of a container's state or name (HTTP 409)."""


def socket_url(url: str) -> str:
    """The docker SDK base URL for a Provider `url`.

    `unix://PATH` with a relative PATH (`unix://.metalform-lab/docker/docker.sock`) resolves
    against the current directory of the Metalform process, as the Docker CLI's `-H` does; the
    docker SDK would otherwise read its first segment as a host name (and lowercase it).
    """
    if not url.startswith("unix://"):
        return url
    path = url.removeprefix("unix://")
    absolute = os.path.abspath(path)
    if len(absolute.encode()) > UNIX_PATH_MAX:
        raise PermanentError(f"the socket path of {url} is longer than {UNIX_PATH_MAX} bytes")
    return f"unix://{absolute}"


def _name_filter(names: Sequence[str]) -> list[str]:
    # The `name` filter is an unanchored regular expression over "/name".
    return [f"^/{name.replace('.', '[.]')}$" for name in names]


class DockerEngine:
    """A connection to one engine, shared by every Service on it (one client, reused)."""

    def __init__(self, url: str, limiter: Limiter, timeout: float) -> None:
        self.url = url
        self.endpoint = f"docker:{url}"
        self.limiter = limiter
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self.on_client: Callable[[docker.DockerClient], None] | None = None
        """Called with each new client (tests count the HTTP requests it makes)."""

    def _connect(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                base_url = socket_url(self.url)
                if base_url.startswith("unix://"):
                    _probe(base_url.removeprefix("unix://"), self.timeout)
                # Construction asks the engine for its API version: one request, in a slot.
                client = docker.DockerClient(base_url=base_url, timeout=max(1, round(self.timeout)))
                if self.on_client is not None:
                    self.on_client(client)
                self._client = client
            return self._client

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except docker.errors.NotFound as exc:
            raise PermanentError(f"{self.url}: {what}: {_explain(exc)}") from None
        except docker.errors.APIError as exc:
            status = exc.status_code or 0
            if status == 409:
                raise ContainerConflict(f"{self.url}: {what}: {_explain(exc)}") from None
            if status >= 500:
                raise TemporaryError(f"{self.url}: {what}: {_explain(exc)}") from None
            raise PermanentError(f"{self.url}: {what}: {_explain(exc)}") from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise UnreachableError(endpoint=self.url, cause=_cause(exc)) from None
        except docker.errors.DockerException as exc:
            # Raised by the client's constructor when the engine does not answer.
            raise UnreachableError(endpoint=self.url, cause=_cause(exc)) from None
        except FileNotFoundError:
            raise UnreachableError(endpoint=self.url, cause="no such socket") from None
        except OSError as exc:
            raise UnreachableError(endpoint=self.url, cause=exc.strerror or str(exc)) from None

    def call(self, what: str, request: Callable[[docker.APIClient], T]) -> T:
        """Run one request against the engine's low-level API, holding an endpoint slot."""
        with self.limiter.slot(self.endpoint), self._translated(what):
            return request(self._connect().api)

    # -- requests ----------------------------------------------------------------------------

    def list_managed(self) -> list[dict[str, Any]]:
        """Every container carrying Metalform's mark, running or not: one request."""
        found: list[dict[str, Any]] = self.call(
            "list containers",
            lambda api: api.containers(all=True, filters={"label": MANAGED_LABEL}),
        )
        return found

    def list_named(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """Every container (managed or not) with one of these names: one request."""
        if not names:
            return []
        found: list[dict[str, Any]] = self.call(
            "list containers",
            lambda api: api.containers(all=True, filters={"name": _name_filter(names)}),
        )
        return found

    def find_managed(self, name: str, address: str) -> dict[str, Any] | None:
        """The managed container of `address` named `name`, or None."""
        labels = [MANAGED_LABEL, f"{RESOURCE_KEY}={address}"]
        found: list[dict[str, Any]] = self.call(
            "find the container",
            lambda api: api.containers(
                all=True, filters={"label": labels, "name": _name_filter([name])}
            ),
        )
        return found[0] if found else None

    def list_all(self) -> list[dict[str, Any]]:
        """Every container, managed or not, running or not: one request."""
        found: list[dict[str, Any]] = self.call(
            "list containers", lambda api: api.containers(all=True)
        )
        return found

    def inspect(self, container_id: str) -> dict[str, Any]:
        """A container's full configuration (environment included: handle as secret)."""
        found: dict[str, Any] = self.call(
            "inspect the container", lambda api: api.inspect_container(container_id)
        )
        return found

    def inspect_image(self, image: str) -> dict[str, Any] | None:
        """An image's configuration (its own env, command and labels), or None if absent."""

        def request(api: docker.APIClient) -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return None
            return found

        return self.call(f"inspect image {image}", request)

    def create(self, container: dict[str, Any], host: dict[str, Any]) -> str:
        def request(api: docker.APIClient) -> str:
            created = api.create_container(host_config=api.create_host_config(**host), **container)
            return str(created["Id"])

        return self.call(f"create container {container['name']}", request)

    def has_image(self, image: str) -> bool:
        """Whether the engine holds `image` (Metalform never pulls: engines may be offline)."""

        def request(api: docker.APIClient) -> bool:
            try:
                api.inspect_image(image)
            except docker.errors.ImageNotFound:
                return False
            return True

        return self.call(f"inspect image {image}", request)

    def start(self, container_id: str) -> None:
        self.call("start the container", lambda api: api.start(container_id))

    def stop(self, container_id: str) -> None:
        self.call("stop the container", lambda api: api.stop(container_id, timeout=STOP_TIMEOUT))

    def remove(self, container_id: str) -> None:
        self.call("remove the container", lambda api: api.remove_container(container_id))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def _probe(path: str, timeout: float) -> None:
    """Connect to the engine's socket once, closing it whatever happens.

    The docker SDK leaks the socket of a failed unix connection (a ResourceWarning per
    request to an engine that is down), so an engine is known to answer before a client is
    made for it.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        probe.connect(path)


def _explain(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation) if explanation else str(exc)


def _cause(exc: Exception) -> str:
    """A short reason: the innermost error, not the SDK's nested retry text."""
    text = str(exc)
    for marker in (
        "FileNotFoundError",
        "ConnectionRefusedError",
        "Connection refused",
        "No such file or directory",
        "timed out",
    ):
        if marker in text:
            return {
                "FileNotFoundError": "no such socket",
                "No such file or directory": "no such socket",
                "ConnectionRefusedError": "connection refused",
            }.get(marker, marker.lower())
    return text.splitlines()[0][:200] if text else type(exc).__name__
