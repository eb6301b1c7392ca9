"""The resource envelope, addresses, diagnostics and the closed vocabularies."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Annotated, Any, Generic

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SerializeAsAny, field_validator
from pydantic.alias_generators import to_camel
from typing_extensions import TypeIs, TypeVar

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


FIELD_GLOB = re.compile(r"[^\s.\[\]?]+(\.[^\s.\[\]?]+)*")
"""A field path as the plan shows it (`bios.attributes.ProcTurboMode`), `*` for any part."""


def _field_glob(value: str) -> str:
    if not FIELD_GLOB.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a field path: dot-separated names such as "
            "'bios.attributes.ProcTurboMode', with '*' for any characters (no spaces, "
            "'?' or '[...]', no empty part)"
        )
    return value


FieldGlob = Annotated[str, AfterValidator(_field_glob)]


def matches_any(path: str, globs: Iterable[str]) -> bool:
    """Whether a plan path matches one of the field globs."""
    return any(fnmatchcase(path, glob) for glob in globs)


class IgnorableSpec(SpecModel):
    """Base of the spec of every resource whose fields are compared with the live state."""

    ignore: list[FieldGlob] = Field(
        default_factory=list,
        description="Field paths (as in the plan, '*' for any characters) read and shown by "
        "--refresh-only, never planned",
    )


PAUSED_ANNOTATION = "metalform.io/paused"
"""`metadata.annotations` key: the resource is read and shown, never acted on (the value says
why)."""


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
    SUSPENDED = "Suspended"
    """Paused by the `metalform.io/paused` annotation: read, never acted on."""


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


SpecT = TypeVar("SpecT", bound=BaseModel, default=BaseModel, covariant=True)
"""The spec model of a resource; a bare `Resource` holds any spec model."""


class Resource(BaseModel, Generic[SpecT]):
    """One document of the desired state, validated.

    Generic in its spec so the type checker sees `resource.spec.x`: `Resource[ServerSpec]`.
    Resources are built unparametrized (the loader picks the spec model by kind at run time);
    `typed()` narrows one after a kind check.
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    metadata: Metadata
    spec: SerializeAsAny[SpecT]
    """Serialized as its own model, not as the bound (which has no fields)."""
    location: Location | None = None
    source: str = "git"
    """Where the resource was declared: `git`, or an inventory provider such as `netbox`."""

    @property
    def address(self) -> Address:
        return address_of(self.kind, self.metadata.name)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def paused(self) -> str | None:
        """Why the resource is paused (`metalform.io/paused`), None when it is not."""
        return self.metadata.annotations.get(PAUSED_ANNOTATION)

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


SpecM = TypeVar("SpecM", bound=BaseModel)


def is_of(resource: Resource, spec: type[SpecM]) -> TypeIs[Resource[SpecM]]:
    """Whether `resource`'s spec is a `spec` model (narrows its type)."""
    return isinstance(resource.spec, spec)


def typed(resource: Resource, spec: type[SpecM]) -> Resource[SpecM]:
    """`resource`, typed by its spec model; TypeError when its spec is of another model."""
    if is_of(resource, spec):
        return resource
    raise TypeError(
        f"{resource.address}: spec is a {type(resource.spec).__name__}, not a {spec.__name__}"
    )


def find(
    resources: Mapping[Address, Resource], address: Address, spec: type[SpecM]
) -> Resource[SpecM] | None:
    """The resource at `address` if any, typed by `spec` (TypeError if it is of another)."""
    found = resources.get(address)
    return typed(found, spec) if found is not None else None
