"""How the central side and the workers reach the broker: URL, credentials, TLS, deadlines."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, field_validator
from pydantic.alias_generators import to_camel

from metalform.server.durations import parse_duration
from reconciler.errors import MetalformError
from reconciler.model.credentials import SecretRef
from reconciler.secrets import resolve

ENV_BROKER = "METALFORM_BROKER"
ENV_BACKEND = "METALFORM_BROKER_BACKEND"
ENV_TASK_KEY = "METALFORM_TASK_KEY"
DEFAULT_LABEL = "site"
QUEUE_PREFIX = "site-"


def queue_of(site: str) -> str:
    return f"{QUEUE_PREFIX}{site}"


@dataclass(frozen=True)
class SitesConfig:
    """Everything a broker client needs; the password and task key are never printed."""

    broker: str
    """Broker URL without a password (`redis://127.0.0.1:6379/0`, `amqp://user@host//`)."""
    task_key: bytes = field(repr=False)
    """HMAC key every task is signed with (`METALFORM_TASK_KEY`)."""
    password: str | None = field(default=None, repr=False)
    backend: str | None = None
    """The Redis of replies and heartbeats (without a password); defaults to the broker
    when that is Redis, and is required with RabbitMQ."""
    backend_password: str | None = field(default=None, repr=False)
    label: str = DEFAULT_LABEL
    """The label of a resource that names its site."""
    tls: dict[str, Any] | None = None
    """`ssl` options for the broker and backend (`{"ca_certs": PATH}`), or None for plain TCP."""
    read_deadline: float = 60.0
    """Seconds a site may take to answer a read before its resources are Unreachable."""
    heartbeat_ttl: float = 15.0
    """A worker whose heartbeat is older than this is not live."""
    chunk: int = 100
    """Resources per read task: several workers of a site share a big site's reads."""

    def url(self) -> str:
        """The broker URL with its password put back, for the Celery client only."""
        return _with_password(self.broker, self.password)

    @property
    def redis_broker(self) -> bool:
        return self.broker.startswith(("redis://", "rediss://"))

    def backend_url(self) -> str:
        """The Redis of replies and heartbeats, its password put back: `backend`, else the
        broker when that is Redis."""
        if self.backend:
            return _with_password(self.backend, self.backend_password)
        if not self.redis_broker:
            raise MetalformError(
                "a broker that is not Redis (RabbitMQ) needs a Redis for replies and "
                f"heartbeats: give --broker-backend URL (or {ENV_BACKEND}, or `backend:`)"
            )
        return self.url()


def _with_password(raw: str, password: str | None) -> str:
    if not password:
        return raw
    parts = urlsplit(raw)
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def task_key() -> bytes:
    value = os.environ.get(ENV_TASK_KEY)
    if not value:
        raise MetalformError(
            f"{ENV_TASK_KEY} is not set: site tasks are signed with it (the same key on the "
            "server, the CLI and every worker)"
        )
    return value.encode()


def tls_options(ca_file: str | None, cert: str | None = None, key: str | None = None) -> Any:
    """The `ssl` options Celery's Redis and AMQP transports take, or None without a CA."""
    if ca_file is None:
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": ca_file}
    if cert:
        options["ssl_certfile"] = cert
    if key:
        options["ssl_keyfile"] = key
    return options


def from_values(
    broker: str | None,
    *,
    password: SecretRef | None = None,
    base_dir: Path | None = None,
    label: str = DEFAULT_LABEL,
    ca_file: str | None = None,
    read_deadline: float | None = None,
    backend: str | None = None,
    backend_password: SecretRef | None = None,
) -> SitesConfig | None:
    """The config from `--broker`/`broker:` (else METALFORM_BROKER), or None for no sites;
    the reply Redis from `backend` (else METALFORM_BROKER_BACKEND, else the broker)."""
    url = broker or os.environ.get(ENV_BROKER)
    if not url:
        return None
    backend = backend or os.environ.get(ENV_BACKEND) or None
    for what, value in (("broker", url), ("backend", backend)):
        if value and urlsplit(value).password:
            raise MetalformError(
                f"the {what} URL must not carry a password; give it with fromEnv or fromFile"
            )

    def secret(ref: SecretRef | None, what: str) -> str | None:
        return resolve(ref, base_dir=base_dir, what=what).reveal() if ref is not None else None

    config = SitesConfig(
        broker=url,
        task_key=task_key(),
        password=secret(password, "the broker password"),
        backend=backend,
        backend_password=secret(backend_password, "the broker backend password"),
        label=label,
        tls=tls_options(ca_file),
        read_deadline=read_deadline if read_deadline is not None else SitesConfig.read_deadline,
    )
    config.backend_url()  # a RabbitMQ broker without a Redis for replies: say so now
    return config


class BrokerConfig(BaseModel):
    """The server's `broker:`: site workers reached through Celery (Redis, or RabbitMQ with
    a Redis `backend`); the task key comes from METALFORM_TASK_KEY."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    url: str
    password: SecretRef | None = None
    backend: str | None = None
    """Redis for replies and heartbeats (default: the broker, when it is Redis)."""
    backend_password: SecretRef | None = None
    ca_file: str | None = None
    site_label: str = DEFAULT_LABEL
    read_deadline: str | float = "60s"

    @field_validator("read_deadline")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value


def sites_config(broker: BrokerConfig | None, base_dir: Path) -> SitesConfig | None:
    """The running config of `broker:` (secrets resolved, paths made absolute)."""
    if broker is None:
        return None
    return from_values(
        broker.url,
        password=broker.password,
        base_dir=base_dir,
        label=broker.site_label,
        ca_file=str((base_dir / broker.ca_file).resolve()) if broker.ca_file else None,
        read_deadline=parse_duration(broker.read_deadline),
        backend=broker.backend,
        backend_password=broker.backend_password,
    )
