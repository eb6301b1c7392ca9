"""What a provider import is asked (`SourceOptions`) and what each source returns
(`Collected`): the types the sources (`from_maas`, `from_openstack`, `from_docker`) and their
runner (`sources`) share, below both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.load import DesiredState
from reconciler.model import Resource
from reconciler.model.providers import ProviderSpec
from reconciler.provider import ProviderContext


@dataclass
class SourceOptions:
    source: str
    """`maas`, `openstack` or `docker`."""
    provider: str
    """A Provider of the repository, of that type."""
    directory: Path = Path(".")
    out: Path | None = None
    credential: str | None = None
    """maas: the Credential the BMCs of the Servers it writes log in with."""
    labels: dict[str, str] = field(default_factory=dict)
    split: str = "kind"
    parallelism: int = 64
    per_endpoint: int = 4
    timeout: float = 10.0


@dataclass
class Collected:
    """What one source found: documents to write and what it could not import, and why."""

    documents: list[dict[str, Any]]
    found: int
    """Machines, aggregates or containers read."""
    what: str
    """What they are, plural (`machines`)."""
    notes: list[str] = field(default_factory=list)


Collector = Callable[
    [Resource[ProviderSpec], ProviderContext, SourceOptions, DesiredState], Collected
]
