"""The server configuration file's format: the models `metalform serve --config FILE` is
validated against (camelCase keys, every field with a default). `config.py` parses the file
into them, with positions, and resolves them into the running `ServerConfig`."""

from __future__ import annotations

import enum
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from metalform.server.durations import parse_duration
from metalform.sites.config import BrokerConfig
from reconciler.concurrency import DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT
from reconciler.model.credentials import SecretRef

_HEX64 = re.compile(r"[0-9a-f]{64}")  # fullmatch: `$` accepts a final newline


class _Config(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class Role(str, enum.Enum):
    """What a bearer token may do; each role includes the ones before it."""

    VIEWER = "viewer"
    PLANNER = "planner"
    OPERATOR = "operator"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


class RepositoryConfig(_Config):
    url: str = "."
    """Any URL gitpython can fetch (a path, `file://`, `https://`, `ssh://`). Default: the
    Git repository in the current directory."""
    branch: str = "main"
    path: str = "."
    """The folder of the desired state inside the repository."""

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        if not value or value.startswith("-") or re.search(r"[\s~^:?*\[\\]|\.\.|@\{", value):
            raise ValueError("not a valid branch name")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = Path(value).parts
        if Path(value).is_absolute() or ".." in parts:
            raise ValueError("must be a relative path inside the repository")
        return value


class TokenConfig(_Config):
    name: str
    role: Role = Role.VIEWER
    token: SecretRef | None = None
    sha256: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TokenConfig:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("give exactly one of token ({fromEnv|fromFile}) or sha256")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256.lower()):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return self


class ForgeConfig(_Config):
    api_url: str | None = None
    token: SecretRef | None = None
    """API token to post the plan comment and the commit status; none: no reporting."""
    allowed_approvers: list[str] = Field(default_factory=list)
    """Logins whose `/metalform apply` comment applies a pull request's plan."""
    repository: str | None = None
    """Only act on deliveries of this repository (`org/infra`); default: any."""
    plan_forks: bool = False
    """Plan pull requests from forks. Off by default: a fork's desired state could point a
    BMC address at its own host and receive the server's credentials while gathering."""


class GitHubConfig(ForgeConfig):
    webhook_secret: SecretRef | None = None
    api_url: str | None = "https://api.github.com"


class GitLabConfig(ForgeConfig):
    webhook_token: SecretRef | None = None
    api_url: str | None = "https://gitlab.com/api/v4"


class EventStreamsConfig(_Config):
    max: int = Field(default=1000, ge=1, le=100_000)
    """Server-Sent Events streams open at once on this server."""
    per_client: int = Field(default=100, ge=1, le=100_000)
    """Streams open at once per API token."""


class RetentionConfig(_Config):
    max_age: str | float | None = "90d"
    """Plans, applies, events and webhook deliveries older than this are pruned (null: kept)."""
    keep_per_repository: int | None = Field(default=5000, ge=1)
    """Plans and applies beyond the newest this many of a repository are pruned (null: all)."""
    interval: str | float = "1h"
    """How often the server prunes (0: never)."""

    @field_validator("max_age", "interval")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration(value)
        return value


class ConsoleConfig(_Config):
    session_lifetime: str | float = "8h"
    """How long a web console sign-in lasts."""
    secure_cookie: bool = False
    """Mark the session cookie `Secure` (set it when the console is served over HTTPS)."""

    @field_validator("session_lifetime")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        if parse_duration(value) <= 0:
            raise ValueError("must be longer than 0")
        return value


class ServerConfigModel(_Config):
    listen: str = "127.0.0.1:8080"
    database: str = "sqlite:///metalform.db"
    data_dir: str = ".metalform-server"
    """Where the server keeps its working clone of the repository."""
    repository: RepositoryConfig = Field(default_factory=RepositoryConfig)
    auto_apply: bool = False
    drift_interval: str | float = "10m"
    poll_interval: str | float = "1m"
    """How often the remote is fetched to find new commits when no webhook says so."""
    workers: int = Field(default=4, ge=1, le=64)
    parallelism: int = Field(
        default=DEFAULT_PARALLELISM,
        ge=1,
        description="reads and actions in flight at once across BMCs and APIs",
    )
    per_endpoint: int = Field(
        default=DEFAULT_PER_ENDPOINT, ge=1, description="requests in flight to one BMC or API"
    )
    public_url: str | None = None
    """Base URL people reach the server at; commit statuses link to the plan there."""
    tokens: list[TokenConfig] = Field(default_factory=list)
    event_streams: EventStreamsConfig = Field(default_factory=EventStreamsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    github: GitHubConfig | None = None
    gitlab: GitLabConfig | None = None
    broker: BrokerConfig | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("drift_interval", "poll_interval")
    @classmethod
    def _duration(cls, value: str | float) -> str | float:
        parse_duration(value)
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+")):
            raise ValueError("must be sqlite:///PATH or postgresql://...")
        return value

    @model_validator(mode="after")
    def _unique_token_names(self) -> ServerConfigModel:
        names = [t.name for t in self.tokens]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"duplicate token names: {', '.join(duplicated)}")
        return self


def parse_listen(value: str) -> tuple[str, int]:
    """`127.0.0.1:8080` -> (host, port); `[::1]:8080` for IPv6."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8080")
    number = int(port)
    if not 0 <= number <= 65535:
        raise ValueError("port must be between 0 and 65535")
    return host.strip("[]"), number
