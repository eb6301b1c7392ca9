"""The resource envelope, addresses, diagnostics and the closed vocabularies."""

from __future__ import annotations

import enum
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

API_VERSION = "metalform/v1"
NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")
"""A name, matched with `fullmatch` (`$` would accept a trailing newline)."""
NAME_MAX = 63

Address = str
"""`Kind/name`, e.g. `Server/gpu-host-001`."""


def address_of(kind: str, name: str) -> Address:
    return f"{kind}/{name}"


class SpecModel(BaseModel):
    """Base of every user-facing model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class ChangeKind(str, enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "noop"


class Severity(str, enum.Enum):
    """How bad: a diagnostic is an error or a warning; an event may also be info."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class SyncStatus(str, enum.Enum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"


class Health(str, enum.Enum):
    HEALTHY = "Healthy"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    UNREACHABLE = "Unreachable"
    UNKNOWN = "Unknown"


class Location(BaseModel):
    """Where a value came from: a file of the desired-state repository, 1-based line and column."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


class Diagnostic(BaseModel):
    """One problem found in the input or at plan time; all of a run are reported together."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    severity: Severity
    message: str
    address: Address | None = None
    field: str | None = None
    location: Location | None = None

    def render(self) -> str:
        where = f"{self.location}: " if self.location else ""
        what = self.address or ""
        if self.field:
            what = f"{what} {self.field}" if what else self.field
        what = f"{what}: " if what else ""
        return f"{where}{self.severity.value}: {what}{self.message}"


class Metadata(SpecModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if len(value) > NAME_MAX:
            raise ValueError(f"name is {len(value)} characters long; at most {NAME_MAX} allowed")
        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "name must be lowercase letters, digits, '.' and '-', "
                "starting and ending with a letter or digit"
            )
        return value


class Resource(BaseModel):
    """One document of the desired state, validated."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: str
    metadata: Metadata
    spec: Any
    location: Location | None = None
    source: str = "git"
    """Where the resource was declared: `git`, or an inventory provider such as `netbox`."""

    @property
    def address(self) -> Address:
        return address_of(self.kind, self.metadata.name)

    @property
    def name(self) -> str:
        return self.metadata.name

    def document(self) -> dict[str, Any]:
        """The resource as a JSON-able document, as written in Git (camelCase, no defaults)."""
        document = {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": self.metadata.model_dump(mode="json", by_alias=True, exclude_defaults=True),
            "spec": self.spec.model_dump(mode="json", by_alias=True, exclude_unset=True),
        }
        if self.source != "git":
            document["source"] = self.source
        return document
