"""One OpenStack cloud's compute API: a reused openstacksdk connection, requests under limits.

Authentication: without a credential, the lab's header authentication (keystoneauth's NoAuth
plugin plus `X-User-Id`, `X-Project-Id`, `X-Roles: admin`, which nova trusts when its paste
pipeline has no `authtoken` filter). A `token` credential is sent as `X-Auth-Token` to the
given endpoint. Keystone password authentication (`basic` credentials, a service catalog) is
not supported yet.

Failures become Metalform's errors: no answer is `UnreachableError`, HTTP 5xx is
`TemporaryError`, anything else Nova refuses (an unknown host, a zone conflict) is
`PermanentError` with Nova's own explanation.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import openstack.connection
import openstack.exceptions
import openstack.warnings
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import noauth, session, token_endpoint

from reconciler.concurrency import Limiter
from reconciler.errors import PermanentError, TemporaryError, UnreachableError
from reconciler.secrets import ResolvedCredential

T = TypeVar("T")

MICROVERSION = "2.53"
"""Hypervisors list their servers (`with_servers`) from 2.53."""

LAB_USER = "metalform"


class HostNotFound(PermanentError):
    """Nova does not know the compute host an action names."""


class Cloud:
    """The compute API of one Provider resource (one connection, reused)."""

    def __init__(
        self,
        url: str,
        limiter: Limiter,
        timeout: float,
        *,
        project: str | None = None,
        region: str | None = None,
        verify: bool = True,
        credential: ResolvedCredential | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.endpoint = f"openstack:{self.url}"
        self.limiter = limiter
        self.timeout = timeout
        self._project = project or LAB_USER
        self._region = region
        self._verify = verify
        self._credential = credential
        self._conn: openstack.connection.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> openstack.connection.Connection:
        with self._lock:
            if self._conn is None:
                headers: dict[str, str] = {}
                if self._credential is None:
                    auth: Any = noauth.NoAuth()
                    headers = {
                        "X-User-Id": LAB_USER,
                        "X-Project-Id": self._project,
                        "X-Roles": "admin",
                    }
                elif self._credential.username is None:
                    auth = token_endpoint.Token(self.url, self._credential.secret.reveal())
                else:
                    raise PermanentError(
                        f"{self.url}: Credential/{self._credential.name} is a username and "
                        "password; Metalform talks to OpenStack with a token (type: token) only"
                    )
                sess = session.Session(
                    auth=auth, verify=self._verify, timeout=self.timeout, additional_headers=headers
                )
                self._conn = openstack.connection.Connection(
                    session=sess,
                    compute_endpoint_override=self.url,
                    compute_api_version="2",
                    region_name=self._region,
                )
            return self._conn

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except openstack.exceptions.NotFoundException as exc:
            raise HostNotFound(f"{self.url}: {what}: {_explain(exc)}") from None
        except openstack.exceptions.HttpException as exc:
            status = exc.status_code or 0
            if status >= 500:
                raise TemporaryError(f"{self.url}: {what}: {_explain(exc)}") from None
            raise PermanentError(f"{self.url}: {what}: {_explain(exc)}") from None
        except (
            ks_exceptions.ConnectFailure,
            ks_exceptions.ConnectTimeout,
            ks_exceptions.ConnectionError,
        ) as exc:
            raise UnreachableError(endpoint=self.url, cause=type(exc).__name__) from None
        except ks_exceptions.RequestTimeout:
            raise UnreachableError(endpoint=self.url, cause="timed out") from None
        except ks_exceptions.DiscoveryFailure:
            # The version document is the first request of a connection: nothing answered it.
            raise UnreachableError(
                endpoint=self.url, cause="no compute API version document"
            ) from None
        except ks_exceptions.ClientException as exc:
            raise PermanentError(f"{self.url}: {what}: {type(exc).__name__}") from None
        except openstack.exceptions.SDKException as exc:
            raise PermanentError(f"{self.url}: {what}: {exc}") from None

    def call(self, what: str, request: Callable[[Any], T]) -> T:
        """Run one request (or one paginated listing) against the compute proxy, in a slot."""
        with self.limiter.slot(self.endpoint), self._translated(what), _sdk_quiet():
            return request(self._connect().compute)

    # -- requests ----------------------------------------------------------------------------

    def aggregates(self) -> list[dict[str, Any]]:
        """Every aggregate of the cloud: one request."""
        return self.call("list aggregates", lambda c: [_plain(a) for a in c.aggregates()])

    def aggregate(self, aggregate_id: Any) -> dict[str, Any]:
        return self.call("read aggregate", lambda c: _plain(c.get_aggregate(aggregate_id)))

    def compute_hosts(self) -> dict[str, int | None]:
        """Compute host -> instances on it (None: not countable), in two listings.

        The services listing names the hosts aggregates accept; the hypervisor listing with
        its servers counts instances per hypervisor (node). The detailed hypervisor listing
        would name each node's host too, but Nova then asks every compute host for its uptime
        over RPC. A node is a host's when their names match, or their short names do.
        """

        def services(compute: Any) -> list[str]:
            return [s.host for s in compute.services(binary="nova-compute")]

        def hypervisors(compute: Any) -> list[tuple[str, int]]:
            return [
                (h.name, len(h.servers or []))
                for h in compute.hypervisors(
                    details=False, with_servers=True, microversion=MICROVERSION
                )
            ]

        hosts = self.call("list compute services", services)
        nodes = self.call("list hypervisors", hypervisors)
        by_short: dict[str, list[str]] = {}
        for host in hosts:
            by_short.setdefault(host.split(".")[0], []).append(host)
        counts: dict[str, int | None] = dict.fromkeys(hosts)
        for node, servers in nodes:
            matches = [node] if node in counts else by_short.get(node.split(".")[0], [])
            if len(matches) == 1:
                counts[matches[0]] = (counts[matches[0]] or 0) + servers
        return counts

    def has_compute_host(self, host: str) -> bool:
        """Whether `host` runs a nova-compute service Nova knows: one filtered listing."""
        return self.call(
            f"find compute host {host}",
            lambda c: any(s.host == host for s in c.services(binary="nova-compute", host=host)),
        )

    def compute_services(self, host: str) -> list[dict[str, Any]]:
        """The nova-compute services of `host`: their state (up/down), status (enabled/
        disabled) and why one was disabled; one filtered listing."""
        return self.call(
            f"list compute services of {host}",
            lambda c: [
                {
                    "host": s.host,
                    "state": s.state,
                    "status": s.status,
                    "disabledReason": s.disabled_reason,
                    "forcedDown": bool(s.is_forced_down),
                }
                for s in c.services(binary="nova-compute", host=host)
                if s.host == host
            ],
        )

    def create(self, name: str, zone: str | None) -> dict[str, Any]:
        return self.call(
            f"create aggregate {name}",
            lambda c: _plain(c.create_aggregate(name=name, availability_zone=zone)),
        )

    def delete(self, aggregate_id: Any) -> None:
        self.call(
            "delete aggregate", lambda c: c.delete_aggregate(aggregate_id, ignore_missing=False)
        )

    def set_zone(self, aggregate_id: Any, zone: str | None) -> None:
        self.call(
            "set availability zone",
            lambda c: c.update_aggregate(aggregate_id, availability_zone=zone),
        )

    def set_metadata(self, aggregate_id: Any, metadata: dict[str, str | None]) -> None:
        self.call("set metadata", lambda c: c.set_aggregate_metadata(aggregate_id, metadata))

    def add_host(self, aggregate_id: Any, host: str) -> None:
        self.call(f"add host {host}", lambda c: c.add_host_to_aggregate(aggregate_id, host))

    def remove_host(self, aggregate_id: Any, host: str) -> None:
        self.call(f"remove host {host}", lambda c: c.remove_host_from_aggregate(aggregate_id, host))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_SDK_WARNINGS_LOCK = threading.Lock()


@contextmanager
def _sdk_quiet() -> Iterator[None]:
    """Silence the SDK's deprecation warnings about its own internals.

    openstacksdk 4.x calls its own deprecated code on every request (`_extract_name` with
    `service_type`, `Resource._compute_attributes`) and warns about it: nothing a caller can
    change. `catch_warnings` swaps the process-wide filter list, so two threads inside it would
    restore each other's lists: SDK calls take turns (a few calls per plan, so the cost is small).
    """
    with _SDK_WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=openstack.warnings.RemovedInSDK50Warning)
        yield


def _plain(aggregate: Any) -> dict[str, Any]:
    return {
        "id": aggregate.id,
        "name": aggregate.name,
        "availability_zone": aggregate.availability_zone,
        "metadata": dict(aggregate.metadata or {}),
        "hosts": list(aggregate.hosts or []),
    }


def _explain(exc: openstack.exceptions.HttpException) -> str:
    detail = exc.details or exc.message or ""
    return f"HTTP {exc.status_code}: {detail}".strip()
