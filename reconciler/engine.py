"""The engine: load, gather, plan and apply wired together, for the CLI and the server.

This module knows no provider by name: they come from entry points (`installed_providers`).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from reconciler.apply import Applier, ApplyResult, Listener, check_fresh
from reconciler.checks import check_drivers
from reconciler.concurrency import DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT, Limiter
from reconciler.credentials import check_credentials, fingerprint_key
from reconciler.errors import MetalformError, StalePlanError
from reconciler.gather import Gathered, gather, group_by_driver
from reconciler.inventory import import_inventory
from reconciler.load import (
    DesiredState,
    load,
    resources_from_documents,
    revision_files,
    worktree_files,
    worktree_revision,
)
from reconciler.model import Address, Diagnostic, Plan, Resource, address_of, find
from reconciler.model.credentials import CredentialSpec
from reconciler.model.plan import PlanSource
from reconciler.model.providers import ProviderSpec
from reconciler.plan import PlanOptions, make_plan, managed
from reconciler.provider import (
    JournalFactory,
    Provider,
    ProviderContext,
    ProviderFactory,
    installed_providers,
)
from reconciler.secrets import ResolvedCredential, resolve
from reconciler.userdata import repository_files

DISCOVERING_TYPES = frozenset({"docker"})
"""Provider types that create objects Metalform must delete when Git drops them."""


class Routing(Protocol):
    """Where a resource's reads and actions run: in this process, or elsewhere (a site's
    workers). The application supplies one; the engine only asks it these three things."""

    def remote(self, resource: Resource) -> bool:
        """Whether the resource is read and changed elsewhere (its secrets resolve there)."""
        ...

    def factories(self, local: Mapping[str, ProviderFactory]) -> Mapping[str, ProviderFactory]:
        """Provider factories that send remote resources elsewhere and run the rest here."""
        ...

    def credentials(
        self, remote: Sequence[Resource], resources: Mapping[Address, Resource]
    ) -> tuple[dict[str, str], list[Diagnostic]]:
        """Fingerprints of the secrets remote resources use, resolved where they run, and
        diagnostics (a site that cannot answer)."""
        ...


@dataclass
class Settings:
    parallelism: int = DEFAULT_PARALLELISM
    per_endpoint: int = DEFAULT_PER_ENDPOINT
    timeout: float = 10.0
    retries: int = 2
    operation_timeout: float = 600.0
    journals: JournalFactory | None = field(default=None, compare=False)
    """Where providers keep what live systems cannot tell them (ProviderContext.journals)."""


class CredentialResolver:
    """Resolves Credential resources by name, once each, for the providers."""

    def __init__(self, resources: Mapping[Address, Resource], base_dir: Path | None) -> None:
        self._resources = resources
        self._base_dir = base_dir
        self._cache: dict[str, ResolvedCredential] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> ResolvedCredential:
        with self._lock:
            if name in self._cache:
                return self._cache[name]
            resource = find(self._resources, address_of("Credential", name), CredentialSpec)
            if resource is None:
                raise MetalformError(f"Credential {name!r} is not defined")
            spec = resource.spec
            secret = resolve(
                spec.secret, base_dir=self._base_dir, what=f"the secret of Credential/{name}"
            )
            previous = (
                resolve(
                    spec.previous,
                    base_dir=self._base_dir,
                    what=f"the previous secret of Credential/{name}",
                )
                if spec.previous is not None
                else None
            )
            resolved = ResolvedCredential(
                name=name, username=spec.username, secret=secret, previous=previous
            )
            self._cache[name] = resolved
            return resolved


@dataclass
class Session:
    """Providers connected for one plan or apply; close() releases their connections."""

    providers: dict[str, Provider]
    limiter: Limiter
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(
    resources: Mapping[Address, Resource],
    drivers: Collection[str],
    settings: Settings,
    base_dir: Path | None,
    factories: Mapping[str, ProviderFactory] | None = None,
) -> Session:
    factories = factories if factories is not None else installed_providers()
    limiter = Limiter(settings.parallelism, settings.per_endpoint)
    context = ProviderContext(
        limiter=limiter,
        credential=CredentialResolver(resources, base_dir),
        timeout=settings.timeout,
        retries=settings.retries,
        operation_timeout=settings.operation_timeout,
        resources=resources,
        journals=settings.journals,
    )
    providers: dict[str, Provider] = {}
    for key in sorted(drivers):
        if key not in factories:
            known = ", ".join(sorted(factories)) or "none"
            raise MetalformError(f"no provider is installed for driver {key!r} (known: {known})")
        providers[key] = factories[key](context)
    return Session(providers=providers, limiter=limiter)


@contextmanager
def bulk_allocation() -> Iterator[None]:
    """Pause the cyclic garbage collector while a plan builds its models.

    A plan of ten thousand servers allocates millions of objects that all live until the plan
    is done; the collector would rescan them over and over (measured: 40% of the plan's time).
    Nothing is lost: collection resumes, and catches up, when the plan is built.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def current_revision(path: Path, rev: str | None) -> str:
    if rev is None:
        return worktree_revision(worktree_files(path))
    sha, _ = revision_files(path, rev)
    return sha


@dataclass
class PlanRun:
    plan: Plan
    desired: DesiredState
    gathered: Gathered


class Engine:
    """Plans and applies one desired-state repository."""

    def _credentials(
        self, chosen: Sequence[Resource], resources: Mapping[Address, Resource], base: Path
    ) -> tuple[dict[str, str], list[Diagnostic]]:
        """Fingerprints of the secrets `chosen` needs; those of remote resources come from
        where they run (a secret missing here is no error for them)."""
        remote = [r for r in chosen if self.route is not None and self.route.remote(r)]
        if self.route is None or not remote:
            return check_credentials(chosen, resources, base, fingerprint_key())
        local = [r for r in chosen if not self.route.remote(r)]
        fingerprints, diagnostics = check_credentials(local, resources, base, fingerprint_key())
        far, notes = self.route.credentials(remote, resources)
        return {**far, **fingerprints}, [*diagnostics, *notes]

    def _check_secrets(self, plan: Plan, resources: Mapping[Address, Resource], base: Path) -> None:
        """A secret rotated between plan and apply makes the plan stale."""
        if not plan.credential_fingerprints:
            return
        users = [r for r in resources.values() if r.kind != "Credential"]
        now, _ = self._credentials(users, resources, base)
        rotated = sorted(
            name
            for name, value in plan.credential_fingerprints.items()
            if now.get(name, value) != value
        )
        if rotated:
            raise StalePlanError(
                why="the secret of "
                + ", ".join(f"Credential/{n}" for n in rotated)
                + " changed since the plan was made; "
                "plan again"
            )

    def __init__(
        self,
        settings: Settings | None = None,
        factories: Mapping[str, ProviderFactory] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        route: Routing | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.factories = factories
        self.clock = clock
        self.route = route

    def _factories(self) -> Mapping[str, ProviderFactory]:
        if self.factories is None:
            self.factories = installed_providers()
        if self.route is not None:
            return self.route.factories(self.factories)
        return self.factories

    def plan(
        self,
        path: Path,
        rev: str | None = None,
        *,
        targets: Collection[Address] = (),
        exclude: Collection[str] = (),
        refresh_only: bool = False,
        set_unknown_passwords: bool = False,
        on_gather: Callable[[int, int], None] | None = None,
    ) -> PlanRun:
        """Plan `path` (at `rev`): all its resources, or the `targets`, less `exclude` globs."""
        with bulk_allocation():
            return self._plan(
                path,
                rev,
                targets=targets,
                exclude=exclude,
                refresh_only=refresh_only,
                set_unknown_passwords=set_unknown_passwords,
                on_gather=on_gather,
            )

    def _plan(
        self,
        path: Path,
        rev: str | None,
        *,
        targets: Collection[Address],
        exclude: Collection[str],
        refresh_only: bool,
        set_unknown_passwords: bool,
        on_gather: Callable[[int, int], None] | None,
    ) -> PlanRun:
        desired = load(path, rev)
        # NetBox inventory Providers turn devices into Servers before anything is chosen, so
        # imported Servers are planned (and their credentials checked) like Git's.
        desired = import_inventory(desired, CredentialResolver(desired.resources, path))
        chosen = managed(desired, targets, exclude)
        credentials, missing = self._credentials(chosen, desired.resources, path)
        desired.warnings.extend(missing)
        groups = group_by_driver(chosen, desired.resources)
        # Providers that create things are asked what they manage, to plan deletions.
        wanted = set(groups) | {
            r.spec.type.value
            for r in desired.of_kind("Provider", ProviderSpec)
            if r.spec.type.value in DISCOVERING_TYPES
        }
        factories = self._factories()
        wanted &= set(factories) | set(groups)
        with open_session(desired.resources, wanted, self.settings, path, factories) as session:
            if on_gather:
                on_gather(len(chosen), len(groups))
            gathered = gather(chosen, session.providers, desired.resources, discover=True)
            endpoints: dict[Address, str] = {}
            for key, members in groups.items():
                for r in members:
                    endpoints.setdefault(r.address, session.providers[key].endpoint(r))
            operations = {k: p.operations for k, p in session.providers.items()}
        options = PlanOptions(
            now=self.clock(),
            targets=frozenset(targets),
            exclude=frozenset(exclude),
            refresh_only=refresh_only,
            set_unknown_passwords=set_unknown_passwords,
            source=PlanSource(path=str(path.resolve()), rev=rev),
            operations=operations,
            endpoints=endpoints,
            files=repository_files(path, rev),
        )
        plan = make_plan(desired, gathered.live, options, gathered.discovered)
        plan = plan.model_copy(update={"credential_fingerprints": credentials})
        return PlanRun(plan, desired, gathered)

    def apply(
        self,
        plan: Plan,
        *,
        path: Path | None = None,
        listener: Listener | None = None,
        check: bool = True,
    ) -> ApplyResult:
        """Execute exactly `plan`; refuse it when stale. `path` overrides the planned source."""
        if plan.has_errors:
            raise MetalformError(
                "the plan has errors (see its diagnostics); fix them and plan again"
            )
        source_path = path or (Path(plan.source.path) if plan.source else Path("."))
        rev = plan.source.rev if plan.source else None
        resources = resources_from_documents(plan.resources)
        touched = [resources[a] for a in plan.live_fingerprints if a in resources]
        needed = set(group_by_driver(list(resources.values()), resources))
        needed |= {a.provider for a in plan.actions if a.provider}
        # A health check may ask a system the resource is not managed through (novaCompute).
        acted_on = {a.address for a in plan.actions}
        needed |= check_drivers(r for a, r in resources.items() if a in acted_on)
        with open_session(
            resources, needed, self.settings, source_path, self._factories()
        ) as session:
            if check:
                revision = plan.revision
                if plan.source is not None:
                    revision = current_revision(source_path, rev)
                live = gather(touched, session.providers, resources).live
                check_fresh(plan, revision, live)
                self._check_secrets(plan, resources, source_path)
            applier = Applier(
                plan,
                resources,
                session.providers,
                parallelism=self.settings.parallelism,
                listener=listener,
            )
            return applier.run()
