"""The server configuration (`metalform serve --config FILE`): YAML, validated, with positions.

The file's format is in `config_file.py`; here it is parsed and resolved.

Every field has a default, so `metalform serve` runs with no file at all (tracking the Git
repository in the current directory). An invalid file fails at start with `file:line:column`
and the field path of every problem, like the desired state. `METALFORM_LISTEN` and
`METALFORM_DATABASE` override the file. Token values are read once, digested (SHA-256) and
forgotten: only the digests are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from metalform.server.config_file import (
    ForgeConfig,
    ServerConfigModel,
    parse_listen,
)
from metalform.server.config_file import Role as Role  # re-exported: the API's roles
from metalform.server.durations import parse_duration
from metalform.sites.config import SitesConfig, sites_config
from reconciler.concurrency import DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT
from reconciler.errors import InputError, MetalformError
from reconciler.model import Diagnostic, Location, Severity
from reconciler.model.credentials import SecretRef
from reconciler.secrets import resolve
from reconciler.yamlio import Pos, YamlProblem, load_documents

ENV_LISTEN = "METALFORM_LISTEN"
ENV_DATABASE = "METALFORM_DATABASE"
MAX_CONFIG_BYTES = 256 * 1024


@dataclass(frozen=True)
class ApiToken:
    """A bearer token as the server keeps it: a name, a role and the SHA-256 of the value."""

    name: str
    role: Role
    digest: bytes


@dataclass(frozen=True)
class ForgeSettings:
    """A forge's settings with its secrets resolved (they stay in memory only)."""

    secret: bytes | None
    api_url: str | None
    token: str | None
    allowed_approvers: frozenset[str]
    repository: str | None
    plan_forks: bool


@dataclass(frozen=True)
class ServerConfig:
    """The validated configuration, with durations in seconds and secrets resolved."""

    listen_host: str
    listen_port: int
    database: str
    data_dir: Path
    repository_url: str
    branch: str
    path: str
    auto_apply: bool
    drift_interval: float
    poll_interval: float
    workers: int
    public_url: str | None
    tokens: tuple[ApiToken, ...]
    github: ForgeSettings | None
    gitlab: ForgeSettings | None
    source: str = "(defaults)"
    max_event_streams: int = 1000
    max_event_streams_per_client: int = 100
    retention_max_age: float | None = 90 * 86400.0
    retention_keep: int | None = 5000
    retention_interval: float = 3600.0
    session_lifetime: float = 8 * 3600.0
    secure_cookie: bool = False
    sites: SitesConfig | None = None
    """Where site workers are reached (`broker:`), or None: everything runs in-process."""
    parallelism: int = DEFAULT_PARALLELISM
    per_endpoint: int = DEFAULT_PER_ENDPOINT

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"


def digest_token(value: str) -> bytes:
    """The SHA-256 digest the server compares presented tokens against."""
    return hashlib.sha256(value.encode("utf-8")).digest()


def _message(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    if err["type"] == "missing":
        return "field required"
    # never echo the input: a misplaced token value must not reach a log
    return str(err["msg"]).removeprefix("Value error, ")


def _diagnostics(exc: ValidationError, file: str, pos: Pos | None) -> list[Diagnostic]:
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        path = [p for p in err["loc"] if isinstance(p, str | int)]
        # union members show up as extra loc parts (e.g. `str`); keep the field path only
        path = [p for p in path if p not in ("str", "float", "int", "SecretRef")]
        line, column = pos.at(path) if pos is not None else (-1, -1)
        out.append(
            Diagnostic(
                severity=Severity.ERROR,
                message=_message(err),
                field=".".join(str(p) for p in path) or None,
                location=Location(file=file, line=line + 1, column=column + 1),
            )
        )
    return out


def _error(
    file: str,
    message: str,
    line: int | None = None,
    column: int | None = None,
    field: str | None = None,
) -> InputError:
    location = Location(
        file=file,
        line=(line or 0) + (1 if line is not None else 0),
        column=(column or 0) + (1 if column is not None else 0),
    )
    diag = Diagnostic(severity=Severity.ERROR, message=message, field=field, location=location)
    return InputError([diag], message=f"invalid server configuration {file}")


def parse_config(text: str, file: str = "metalform-server.yaml") -> ServerConfigModel:
    """Validate configuration text; `InputError` lists every problem with its position."""
    try:
        documents = list(load_documents(text))
    except YamlProblem as exc:
        raise _error(file, exc.message, exc.line, exc.column) from None
    if len(documents) > 1:
        raise _error(
            file,
            "the configuration is one YAML document",
            documents[1][1].line,
            documents[1][1].column,
        )
    raw, pos = documents[0] if documents else ({}, None)
    if not isinstance(raw, dict):
        raise _error(
            file,
            "the configuration must be a mapping",
            pos.line if pos else None,
            pos.column if pos else None,
        )
    try:
        return ServerConfigModel.model_validate(raw)
    except ValidationError as exc:
        raise InputError(
            _diagnostics(exc, file, pos), message=f"invalid server configuration {file}"
        ) from None


def _secret_bytes(ref: SecretRef | None, base: Path, what: str) -> str | None:
    if ref is None:
        return None
    return resolve(ref, base_dir=base, what=what).reveal()


def _forge(
    model: ForgeConfig | None, secret_ref: SecretRef | None, base: Path, name: str
) -> ForgeSettings | None:
    if model is None:
        return None
    secret = _secret_bytes(secret_ref, base, f"the {name} webhook secret")
    token = _secret_bytes(model.token, base, f"the {name} API token")
    return ForgeSettings(
        secret=secret.encode("utf-8") if secret else None,
        api_url=model.api_url,
        token=token,
        allowed_approvers=frozenset(model.allowed_approvers),
        repository=model.repository,
        plan_forks=model.plan_forks,
    )


def resolve_config(
    model: ServerConfigModel,
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
    source: str = "(defaults)",
) -> ServerConfig:
    """Turn a validated model into the running configuration: environment overrides applied,
    relative paths made absolute against `base_dir`, secrets read (tokens digested)."""
    env = os.environ if environ is None else environ
    listen = env.get(ENV_LISTEN) or model.listen
    database = env.get(ENV_DATABASE) or model.database
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise MetalformError(f"{ENV_LISTEN}: {exc}") from None
    if database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        relative = database.removeprefix("sqlite:///")
        if relative and relative != ":memory:":
            database = f"sqlite:///{(base_dir / relative).resolve()}"
    tokens = []
    for entry in model.tokens:
        if entry.sha256 is not None:
            digest = bytes.fromhex(entry.sha256)
        else:
            assert entry.token is not None
            value = resolve(entry.token, base_dir=base_dir, what=f"token {entry.name}").reveal()
            if not value:
                raise MetalformError(f"token {entry.name} is empty")
            digest = digest_token(value)
        tokens.append(ApiToken(entry.name, entry.role, digest))
    github = model.github
    gitlab = model.gitlab
    return ServerConfig(
        listen_host=host,
        listen_port=port,
        database=database,
        data_dir=(base_dir / model.data_dir).resolve(),
        repository_url=model.repository.url,
        branch=model.repository.branch,
        path=model.repository.path,
        auto_apply=model.auto_apply,
        drift_interval=parse_duration(model.drift_interval),
        poll_interval=parse_duration(model.poll_interval),
        workers=model.workers,
        parallelism=model.parallelism,
        per_endpoint=model.per_endpoint,
        public_url=model.public_url.rstrip("/") if model.public_url else None,
        tokens=tuple(tokens),
        github=_forge(github, github.webhook_secret if github else None, base_dir, "github"),
        gitlab=_forge(gitlab, gitlab.webhook_token if gitlab else None, base_dir, "gitlab"),
        source=source,
        max_event_streams=model.event_streams.max,
        max_event_streams_per_client=model.event_streams.per_client,
        retention_max_age=(
            parse_duration(model.retention.max_age) if model.retention.max_age is not None else None
        ),
        retention_keep=model.retention.keep_per_repository,
        retention_interval=parse_duration(model.retention.interval),
        session_lifetime=parse_duration(model.console.session_lifetime),
        secure_cookie=model.console.secure_cookie,
        sites=sites_config(model.broker, base_dir),
    )


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Read, validate and resolve the configuration file (None: every default)."""
    if path is None:
        return resolve_config(ServerConfigModel(), base_dir=Path.cwd(), environ=environ)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise MetalformError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetalformError(f"configuration file {path} does not exist") from None
    except UnicodeDecodeError:
        raise MetalformError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise MetalformError(f"cannot read {path}: {exc.strerror}") from None
    model = parse_config(text, str(path))
    return resolve_config(model, base_dir=path.resolve().parent, environ=environ, source=str(path))


def config_from_mapping(
    data: Mapping[str, Any],
    *,
    base_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """A configuration from a mapping (as the YAML would hold), for tests and embedding."""
    try:
        model = ServerConfigModel.model_validate(dict(data))
    except ValidationError as exc:
        raise InputError(
            _diagnostics(exc, "(mapping)", None), message="invalid server configuration"
        ) from None
    return resolve_config(model, base_dir=base_dir, environ=environ)


def describe(config: ServerConfig) -> Sequence[str]:
    """Lines about the running configuration, secrets left out, for the start-up log."""
    return (
        f"listening on http://{config.listen}",
        f"tracking {redact_url(config.repository_url)} branch {config.branch} path {config.path}",
        f"drift every {config.drift_interval:g}s, poll every {config.poll_interval:g}s, "
        f"auto-apply {'on' if config.auto_apply else 'off'}",
        f"{config.parallelism} requests in flight, at most {config.per_endpoint} to one BMC or API",
        f"{len(config.tokens)} API token(s); webhooks: "
        + (
            ", ".join(n for n, f in (("github", config.github), ("gitlab", config.gitlab)) if f)
            or "none"
        ),
    )


def redact_url(url: str) -> str:
    """A repository URL without the password or token it may embed (`https://x:TOKEN@...`)."""
    return re.sub(r"(?<=://)[^/@]*@", "***@", url)
