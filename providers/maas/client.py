"""A small synchronous MAAS 2.0 API client: OAuth1 PLAINTEXT signing, timeouts, error classes.

python-libmaas is asyncio-based, opens a new HTTP session per call and has no per-request
timeout; the provider needs bounded, retried, slot-limited requests from worker threads, so it
speaks the few routes it uses directly (the same ones python-libmaas calls, see lab.maas).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from oauthlib import oauth1

from reconciler.concurrency import Limiter
from reconciler.errors import (
    AuthenticationError,
    PermanentError,
    TemporaryError,
    UnreachableError,
)

API_PATH = "api/2.0/"


def endpoint_of(url: str) -> str:
    """The limiter key of a MAAS region: `maas:` + scheme://host:port."""
    parts = urlsplit(url)
    return f"maas:{parts.scheme}://{parts.netloc}"


def api_root(url: str) -> str:
    """`http://host:5240/MAAS` -> `http://host:5240/MAAS/api/2.0/` (as python-libmaas does)."""
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
            # The value itself is never part of the message.
            raise PermanentError("a MAAS API key has the form consumer:token:secret")
        return cls(*parts)

    def __repr__(self) -> str:
        return "ApiKey(sensitive)"


class MaasClient:
    """Requests to one MAAS region, each holding a slot of the region's endpoint."""

    def __init__(self, url: str, key: ApiKey, *, credential: str, limiter: Limiter,
                 timeout: float, verify_tls: bool = True) -> None:
        self.url = url
        self.root = api_root(url)
        self.endpoint = endpoint_of(url)
        self._key = key
        self._credential = credential
        self._limiter = limiter
        self._timeout = timeout
        self._session = requests.Session()
        self._session.verify = verify_tls

    def _headers(self, url: str, method: str) -> dict[str, str]:
        client = oauth1.Client(self._key.consumer, "", self._key.token, self._key.secret,
                               signature_method=oauth1.SIGNATURE_PLAINTEXT, realm="OAuth")
        _, headers, _ = client.sign(url, method, None, {})
        return {**headers, "Accept": "application/json"}

    def request(self, method: str, path: str, *, op: str | None = None,
                data: Sequence[tuple[str, str]] | None = None) -> Any:
        """One signed request; the JSON answer, or a classified ProviderError."""
        url = self.root + path
        params = {"op": op} if op else None
        if params:
            url_for_signing = requests.Request(method, url, params=params).prepare().url or url
        else:
            url_for_signing = url
        with self._limiter.slot(self.endpoint):
            try:
                response = self._session.request(
                    method, url, params=params, data=list(data) if data else None,
                    headers=self._headers(url_for_signing, method), timeout=self._timeout)
            except requests.Timeout:
                raise UnreachableError(endpoint=self.url,
                                       cause=f"no answer within {self._timeout:.0f}s") from None
            except requests.ConnectionError as exc:
                raise UnreachableError(endpoint=self.url,
                                       cause=_connection_cause(exc)) from None
        status = response.status_code
        if status in (401, 403):
            raise AuthenticationError(endpoint=self.url,
                                      credential=f"Credential/{self._credential}")
        if status >= 500 or status == 429:
            raise TemporaryError(f"{self.url}: HTTP {status} for {method} {path}")
        if status >= 400:
            raise PermanentError(f"{self.url}: {method} {path}{'?op=' + op if op else ''}: "
                                 f"HTTP {status} {response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise PermanentError(f"{self.url}: {method} {path} did not answer JSON") from None

    # -- the routes ---------------------------------------------------------------------------

    def machines(self) -> list[dict[str, Any]]:
        """Every machine, in one request."""
        result = self.request("GET", "machines/")
        if not isinstance(result, list):
            raise PermanentError(f"{self.url}: machines/ did not answer a list")
        return result

    def machine(self, system_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"machines/{system_id}/")
        return result

    def machine_op(self, system_id: str, op: str,
                   data: Mapping[str, str] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"machines/{system_id}/", op=op,
                                              data=list((data or {}).items()))
        return result

    def deploy(self, system_id: str, *, user_data: str | None,
               distro_series: str | None) -> dict[str, Any]:
        data: dict[str, str] = {}
        if user_data is not None:
            data["user_data"] = base64.b64encode(user_data.encode()).decode()
        if distro_series:
            data["distro_series"] = distro_series
        return self.machine_op(system_id, "deploy", data)

    def set_description(self, system_id: str, description: str) -> None:
        self.request("PUT", f"machines/{system_id}/", data=[("description", description)])

    def tags(self) -> list[str]:
        return [t["name"] for t in self.request("GET", "tags/")]

    def create_tag(self, name: str) -> None:
        self.request("POST", "tags/", data=[("name", name),
                                            ("comment", "managed by Metalform")])

    def update_tag_nodes(self, name: str, *, add: Sequence[str] = (),
                         remove: Sequence[str] = ()) -> None:
        data = [("add", s) for s in add] + [("remove", s) for s in remove]
        self.request("POST", f"tags/{name}/", op="update_nodes", data=data)

    def close(self) -> None:
        self._session.close()


def _connection_cause(exc: requests.ConnectionError) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return exc.__class__.__name__
