"""Read devices from NetBox with pynetbox: the only module of Metalform that talks to NetBox.

`fetch_devices(provider, token)` returns the devices a netbox Provider's `inventory.filter`
selects, as plain JSON dicts (nested objects as dicts too), for `reconciler.inventory`.
pynetbox follows NetBox's pagination itself. Every failure becomes a `MetalformError` that names
the Provider and the cause; the token never appears in it (NetBox does not echo it, and it is
registered with the redactor when its Credential is resolved).
"""

from __future__ import annotations

from typing import Any

import pynetbox
import requests

from reconciler.errors import AuthenticationError, PermanentError, UnreachableError
from reconciler.model import Resource
from reconciler.model.providers import ProviderSpec
from reconciler.secrets import REDACTOR, Secret

API_SUFFIX = "/api"


class _TimeoutSession(requests.Session):
    """A requests session with a default timeout: pynetbox passes none, and a NetBox that
    accepts the connection but never answers would otherwise hang the plan forever."""

    def __init__(self, timeout: float, verify: bool) -> None:
        super().__init__()
        self._timeout = timeout
        self.verify = verify

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(*args, **kwargs)


def base_url(url: str) -> str:
    """The NetBox root pynetbox wants: `https://netbox` (it appends `/api` itself)."""
    url = url.rstrip("/")
    return url[: -len(API_SUFFIX)] if url.endswith(API_SUFFIX) else url


def connect(provider: Resource[ProviderSpec], token: Secret | None) -> Any:
    """A pynetbox API object for the Provider resource (no request is made yet)."""
    spec = provider.spec
    api = pynetbox.api(base_url(spec.url), token=token.reveal() if token else None)
    api.http_session = _TimeoutSession(spec.timeout, spec.verify_tls)
    return api


def _cause(exc: BaseException) -> str:
    """A short cause without secrets: the exception's class and its first line."""
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return REDACTOR(text[:300])


def fetch_devices(provider: Resource[ProviderSpec], token: Secret | None) -> list[dict[str, Any]]:
    """Every device of `provider`'s inventory filter, as NetBox's JSON (all pages)."""
    spec = provider.spec
    filters = dict(spec.inventory.filter) if spec.inventory is not None else {}
    endpoint = f"{provider.address} (NetBox at {base_url(spec.url)})"
    api = connect(provider, token)
    try:
        # `filter` with no arguments is refused by pynetbox; `all` is the same request.
        records = api.dcim.devices.filter(**filters) if filters else api.dcim.devices.all()
        return [dict(record) for record in records]
    except pynetbox.RequestError as exc:
        status = exc.req.status_code
        if status in (401, 403):
            raise AuthenticationError(
                f"{endpoint} refused the token of Credential/{spec.credential} (HTTP {status})"
                if spec.credential
                else f"{endpoint} requires a token (HTTP {status}): set the Provider's credential"
            ) from None
        raise PermanentError(
            f"{endpoint} answered HTTP {status} listing devices: {_cause(exc)}"
        ) from None
    except requests.Timeout:
        raise UnreachableError(
            endpoint=endpoint, cause=f"no answer within {spec.timeout:g}s"
        ) from None
    except requests.ConnectionError as exc:
        raise UnreachableError(
            endpoint=endpoint, cause=f"cannot connect ({_connection_cause(exc)})"
        ) from None
    except (requests.RequestException, pynetbox.ContentError, ValueError) as exc:
        raise PermanentError(f"{endpoint}: cannot read devices: {_cause(exc)}") from None
    finally:
        api.http_session.close()


def _connection_cause(exc: requests.ConnectionError) -> str:
    """`connection refused`, `name not resolved`, ... rather than urllib3's nested repr."""
    text = str(exc).lower()
    for marker, short in (
        ("refused", "connection refused"),
        ("name or service not known", "host name not resolved"),
        ("temporary failure in name resolution", "host name not resolved"),
        ("certificate", "TLS certificate not trusted"),
        ("reset by peer", "connection reset"),
    ):
        if marker in text:
            return short
    return exc.__class__.__name__
