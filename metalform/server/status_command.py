"""`metalform status`: what the server recorded, read from the state store."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from metalform.server.config import ENV_DATABASE
from metalform.store import RepositoryStatus, ResourceStatus, Store
from reconciler.errors import MetalformError

DEFAULT_DB = "metalform.db"


def database_url(directory: Path, database: str | None) -> str:
    """`--database`, else `METALFORM_DATABASE`, else `DIR/metalform.db` (which must exist:
    status never creates a database)."""
    url = database or os.environ.get(ENV_DATABASE)
    if url:
        return url
    path = (directory / DEFAULT_DB).resolve()
    if not path.is_file():
        raise MetalformError(
            f"no state database at {path}; give --database URL (the one `metalform serve` uses)"
        )
    return f"sqlite:///{path}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z") if value else "never"


def _counts(values: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(values.items())) or "none"


def _table(resources: list[ResourceStatus]) -> list[str]:
    rows = [("ADDRESS", "SYNC", "HEALTH", "LAST ACTION", "MESSAGE")]
    for r in resources:
        last = f"{r.last_action} {r.last_result.value}" if r.last_action and r.last_result else "-"
        rows.append((r.address, r.sync.value, r.health.value, last, r.message or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def _repository(repo: RepositoryStatus, resources: list[ResourceStatus]) -> list[str]:
    lines = [
        f"Repository {repo.key}",
        f"  last planned: {repo.last_planned_revision or '-'} at {_when(repo.last_planned_at)}",
        f"  last applied: {repo.last_applied_revision or '-'} at {_when(repo.last_applied_at)}",
        f"  resources: {repo.resources} ({_counts(repo.by_kind)}); drift: {repo.drift}",
        f"  sync: {_counts(repo.by_sync)}; health: {_counts(repo.by_health)}",
        "",
    ]
    if resources:
        lines += ["  " + line for line in _table(resources)]
        lines.append("")
    return lines


def run_status(directory: Path, database: str | None, write: Callable[[str], None]) -> int:
    """Print every repository's status; returns the exit code."""
    url = database_url(directory, database)
    with Store.open(url, migrate_to_head=False) as store:
        if store.schema_revision() is None:
            raise MetalformError("the database holds no Metalform state yet")
        repositories = store.list_repositories()
        if not repositories:
            write("No repository has been planned yet.")
            return 0
        for repo in repositories:
            for line in _repository(repo, store.list_resource_status(repo.key)):
                write(line)
    return 0
