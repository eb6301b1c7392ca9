"""Docker engines: the containers of Service resources.

One `DockerProvider` serves every Provider resource of type docker; each engine (Provider
`url`, e.g. `unix:///run/docker.sock`) gets one reused client. Metalform marks the containers
it creates with the labels `metalform.managed=true` and `metalform.resource=Service/<name>`
and never touches a container without them: a foreign container holding a Service's name is
reported as a conflict, never replaced or deleted, unless the Service declares `adopt: true`
(see `adopt`). The container name is the Service's `metadata.name`.

A secret env value (`{credential: NAME}`) is resolved here, when a container is created, and
nowhere else: reading reports each such Credential's keyed fingerprint (fact `secrets`), plans
and the container's `metalform.spec` label carry that fingerprint, never the value.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from providers.docker.adopt import adopted_live
from providers.docker.client import ContainerConflict, DockerEngine
from providers.docker.mapping import (
    absent,
    container_name,
    create_arguments,
    live_resource,
    resource_of,
    service_address,
)
from reconciler.credentials import fingerprint_key
from reconciler.errors import MetalformError, PermanentError, ProviderError
from reconciler.model import Action, Address, LiveResource, Resource, find, typed
from reconciler.model.live import unreachable
from reconciler.model.providers import ProviderSpec
from reconciler.model.services import SecretEnv, ServiceSpec
from reconciler.planners.service import SECRET_ERRORS_FACT, SECRETS_FACT
from reconciler.provider import ProviderContext
from reconciler.secrets import REDACTOR, fingerprint

OPERATIONS = frozenset(
    {"service.create", "service.recreate", "service.start", "service.stop", "service.delete"}
)

LISTING_REUSE_SECONDS = 5.0
"""A plan reads then discovers at once: discovery reuses read's listing of an engine if it is
this fresh, so a plan costs one listing per engine."""

__all__ = ["OPERATIONS", "DockerProvider"]


class DockerProvider:
    """Services as containers on Docker engines (see the module docstring)."""

    name: ClassVar[str] = "docker"
    kinds: ClassVar[frozenset[str]] = frozenset({"Service"})
    operations: ClassVar[frozenset[str]] = OPERATIONS

    def __init__(self, context: ProviderContext) -> None:
        self.context = context
        self._engines: dict[str, DockerEngine] = {}
        self._lock = threading.Lock()
        self._listings: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._key: bytes | None = None

    # -- secrets -----------------------------------------------------------------------------

    def key(self) -> bytes:
        """The installation's fingerprint key, read once (the same as the plan's)."""
        if self._key is None:
            self._key = fingerprint_key()
        return self._key

    def secret_facts(self, service: Resource) -> dict[str, Any]:
        """Fingerprints of the secrets the Service's env refers to, and why any is missing."""
        names = {v.credential for v in _secret_env(service).values()}
        found: dict[str, str] = {}
        errors: dict[str, str] = {}
        for name in sorted(names):
            try:
                found[name] = fingerprint(self.context.credential(name).secret, self.key())
            except MetalformError as exc:  # a missing Credential, variable or file
                errors[name] = REDACTOR(str(exc))
        facts: dict[str, Any] = {}
        if found:
            facts[SECRETS_FACT] = found
        if errors:
            facts[SECRET_ERRORS_FACT] = errors
        return facts

    def _resolve_env(self, env: Mapping[str, Any]) -> dict[str, str]:
        """The environment a container is created with: secret references resolved."""
        out: dict[str, str] = {}
        for name, value in env.items():
            if isinstance(value, Mapping):
                out[name] = self.context.credential(str(value["credential"])).secret.reveal()
            else:
                out[name] = str(value)
        return out

    # -- connections -------------------------------------------------------------------------

    def engine(self, url: str, timeout: float | None = None) -> DockerEngine:
        """The engine at `url` (one per URL for the provider's lifetime)."""
        with self._lock:
            engine = self._engines.get(url)
            if engine is None:
                engine = DockerEngine(url, self.context.limiter, timeout or self.context.timeout)
                self._engines[url] = engine
            return engine

    def _provider_resource(self, service: Resource) -> Resource[ProviderSpec] | None:
        name = typed(service, ServiceSpec).spec.provider
        return find(self.context.resources, f"Provider/{name}", ProviderSpec)

    def _engine_for(
        self, service: Resource, params: Mapping[str, Any] | None = None
    ) -> DockerEngine:
        provider = self._provider_resource(service)
        if provider is not None:
            spec = provider.spec
            timeout = spec.timeout if "timeout" in spec.model_fields_set else None
            return self.engine(spec.url, timeout)
        engine_url = (params or {}).get("engine")
        if isinstance(engine_url, str) and engine_url:
            # A deleted Service's plan may not carry its Provider; the action names the engine.
            return self.engine(engine_url)
        name = typed(service, ServiceSpec).spec.provider
        raise PermanentError(f"Provider/{name} of {service.address} is not defined")

    def endpoint(self, resource: Resource) -> str:
        if resource.kind == "Provider":
            return f"docker:{typed(resource, ProviderSpec).spec.url}"
        provider = self._provider_resource(resource)
        return f"docker:{provider.spec.url}" if provider is not None else "docker:"

    # -- reading -----------------------------------------------------------------------------

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """Every Service's container: one listing per engine, then matched by name."""
        out: dict[Address, LiveResource] = {}
        by_engine: dict[str, tuple[DockerEngine, list[Resource]]] = {}
        for service in resources:
            try:
                engine = self._engine_for(service)
            except ProviderError as exc:
                out[service.address] = unreachable(service.address, REDACTOR(str(exc)))
                continue
            by_engine.setdefault(engine.url, (engine, []))[1].append(service)
        for engine, services in by_engine.values():
            out.update(self._read_on(engine, services))
        return out

    def _read_on(
        self, engine: DockerEngine, services: Sequence[Resource]
    ) -> dict[Address, LiveResource]:
        try:
            listing = engine.list_managed()
        except ProviderError as exc:
            message = REDACTOR(str(exc))
            return {s.address: unreachable(s.address, message) for s in services}
        self._listings[engine.url] = (time.monotonic(), listing)
        by_name = {container_name(c): c for c in listing}
        out: dict[Address, LiveResource] = {}
        missing: list[Resource] = []
        for service in services:
            container = by_name.get(service.name)
            if container is None:
                missing.append(service)
            elif resource_of(container) == service.address:
                live = live_resource(service.address, container, engine=engine.url)
                out[service.address] = _with_facts(live, self.secret_facts(service))
            else:
                out[service.address] = absent(
                    service.address,
                    engine=engine.url,
                    conflict=(
                        f"container {service.name!r} on {engine.url} is managed by Metalform as "
                        f"{resource_of(container)}, not as {service.address}; it is left alone"
                    ),
                )
        if missing:
            # An absent Service's name may be held by a container Metalform does not manage:
            # one more request per engine finds those, to report a conflict instead of a create
            # that would fail.
            try:
                foreign = {container_name(c) for c in engine.list_named([s.name for s in missing])}
            except ProviderError as exc:
                message = REDACTOR(str(exc))
                foreign = set()
                for service in missing:
                    out[service.address] = unreachable(service.address, message)
                missing = []
            for service in missing:
                conflict = None
                if service.name in foreign and _adopts(service):
                    out[service.address] = self._adopted(engine, service)
                    continue
                if service.name in foreign:
                    conflict = (
                        f"a container named {service.name!r} on {engine.url} is not "
                        "managed by Metalform (no metalform.managed=true label); it is "
                        "left alone: remove or rename it, or rename the Service"
                    )
                live = absent(service.address, engine=engine.url, conflict=conflict)
                out[service.address] = _with_facts(live, self.secret_facts(service))
        return out

    def _adopted(self, engine: DockerEngine, service: Resource) -> LiveResource:
        """The unmarked container a Service adopts, read with `docker inspect`."""
        try:
            container = engine.inspect(service.name)
            image = engine.inspect_image(str((container.get("Config") or {}).get("Image")))
        except ProviderError as exc:
            return unreachable(service.address, REDACTOR(str(exc)))
        facts = {"engine": engine.url, **self.secret_facts(service)}
        secret_env = {name: v.credential for name, v in _secret_env(service).items()}
        return adopted_live(
            service.address, container, image, secret_env=secret_env, key=self.key(), facts=facts
        )

    def _container_of(
        self, engine: DockerEngine, resource: Resource, address: Address
    ) -> dict[str, Any] | None:
        """The managed container of `address`, else the unmarked one a Service adopts."""
        container = engine.find_managed(resource.name, address)
        if container is None and resource.kind == "Service" and _adopts(resource):
            named = engine.list_named([resource.name])
            container = next((c for c in named if container_name(c) == resource.name), None)
        return container

    def discover(self, scope: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        """Every managed container on the engines of these Provider resources, by address.

        An engine that does not answer contributes nothing: no deletion is planned on a guess.
        """
        found: dict[Address, LiveResource] = {}
        for provider in scope:
            spec = typed(provider, ProviderSpec).spec
            engine = self.engine(
                spec.url, spec.timeout if "timeout" in spec.model_fields_set else None
            )
            listing = self._recent_listing(engine.url)
            if listing is None:
                try:
                    listing = engine.list_managed()
                except ProviderError:
                    continue
            for container in listing:
                address = resource_of(container)
                if address != service_address(container_name(container)):
                    continue  # marked by hand or renamed: not something Metalform created
                found[address] = live_resource(
                    address, container, engine=engine.url, provider=provider.name
                )
        return found

    def _recent_listing(self, url: str) -> list[dict[str, Any]] | None:
        taken = self._listings.pop(url, None)
        if taken is None or time.monotonic() - taken[0] > LISTING_REUSE_SECONDS:
            return None
        return taken[1]

    # -- acting ------------------------------------------------------------------------------

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        """Perform exactly `action` on the Service's container; return it read back."""
        engine = self._engine_for(resource, action.params)
        address, name = action.address, resource.name
        operation = action.operation
        if operation not in OPERATIONS:
            raise PermanentError(f"operation {operation} is not supported by the docker provider")
        if operation == "service.create":
            config = {k: v for k, v in action.params.items() if k != "start"}
            args = create_arguments(address, name, config, self._resolve_env)
            try:
                container_id = engine.create(args["container"], args["host"])
            except ContainerConflict:
                raise PermanentError(
                    f"a container named {name!r} already exists on {engine.url}; Metalform "
                    "left it alone (plan again to see whether it manages it)"
                ) from None
            if action.params.get("start"):
                engine.start(container_id)
        else:
            container = self._container_of(engine, resource, address)
            if operation == "service.delete":
                if container is not None:
                    self._remove(engine, container)
            elif container is None:
                raise PermanentError(
                    f"{engine.url} holds no container of {address} "
                    "(removed since the plan was made? plan again)"
                )
            elif operation == "service.recreate":
                args = create_arguments(address, name, action.params, self._resolve_env)
                image = args["container"]["image"]
                # Check before removing anything: a missing image would leave no container.
                if not engine.has_image(image):
                    raise PermanentError(
                        f"image {image} is not on {engine.url} (Metalform "
                        "does not pull images); the container is unchanged"
                    )
                self._remove(engine, container)
                engine.create(args["container"], args["host"])
            elif operation == "service.start":
                engine.start(str(container["Id"]))
            else:
                engine.stop(str(container["Id"]))
        self._listings.pop(engine.url, None)
        return self._read_on(engine, [resource])[address]

    @staticmethod
    def _remove(engine: DockerEngine, container: Mapping[str, Any]) -> None:
        container_id = str(container["Id"])
        # Stop first: a graceful SIGTERM, where `remove(force=True)` would SIGKILL at once.
        if container.get("State") in ("running", "restarting", "paused"):
            engine.stop(container_id)
        engine.remove(container_id)

    def close(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()


def _secret_env(service: Resource) -> dict[str, SecretEnv]:
    if service.kind != "Service":
        return {}
    env = typed(service, ServiceSpec).spec.env
    return {name: v for name, v in env.items() if isinstance(v, SecretEnv)}


def _adopts(service: Resource) -> bool:
    return service.kind == "Service" and typed(service, ServiceSpec).spec.adopt


def _with_facts(live: LiveResource, facts: Mapping[str, Any]) -> LiveResource:
    if not facts:
        return live
    return live.model_copy(update={"facts": {**live.facts, **facts}})
