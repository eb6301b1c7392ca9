"""The central side: send a site's reads and actions to its workers and wait, bounded.

`SiteRouter` is the engine's `Routing`: a resource whose site label names a site is remote;
its provider factories wrap each local provider in a `RoutedProvider` that keeps resources
without a site in this process and sends the others, by site, to queue `site-NAME`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import redis
from amqp.exceptions import AMQPError
from celery import Celery
from kombu.exceptions import OperationalError

from metalform.sites.app import (
    EXECUTE_TASK,
    FINGERPRINT_TASK,
    READ_TASK,
    REPLY_PREFIX,
    make_app,
    make_redis,
)
from metalform.sites.config import SitesConfig, queue_of
from metalform.sites.signing import sign
from metalform.sites.wire import (
    closure,
    documents,
    live_from_json,
    lives_from_json,
    remote_error,
    unpack_reply,
)
from metalform.sites.workers import amqp_queue_depths, live_workers, overview
from reconciler.credentials import users_of_credentials
from reconciler.errors import MetalformError, UnreachableError
from reconciler.model import Action, Address, Diagnostic, LiveResource, Resource, Severity
from reconciler.model.live import unreachable
from reconciler.provider import Provider, ProviderContext, ProviderFactory, drivers
from reconciler.secrets import REDACTOR

log = logging.getLogger("metalform.sites")
Observer = Callable[[str, str, float, bool], None]
"""(site, task, seconds, ok): for metrics."""
EXECUTE_MARGIN = 30.0
"""Seconds an action's answer may take beyond the provider's own operation timeout."""
_SLICE = 2.0
"""Longest single BLPOP: a restarted broker is noticed within this, never a hang."""


class SiteUnavailable(MetalformError):
    template = "site {site}: {why}"


@dataclass
class Replies:
    """The answers that came, by reply key, and why the others did not (when known)."""

    answers: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    """The broker error that ended the wait (None: the deadline did, or everything came)."""

    def why_missing(self, timeout: float) -> str:
        if self.failure is not None:
            return f"the broker failed while waiting for the answer: {self.failure}"
        return f"no worker answered within {timeout:.0f}s"


class SiteRouter:
    """Dispatch to site workers over one broker; see the module docstring."""

    def __init__(
        self,
        config: SitesConfig,
        *,
        app: Celery | None = None,
        client: redis.Redis | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.config = config
        self.app = app or make_app(config)
        self.client = client or make_redis(config)
        self.observer = observer
        self._live: tuple[float, set[str]] | None = None

    # -- the engine's Routing -----------------------------------------------------------

    def site_of(self, resource: Resource) -> str | None:
        return resource.metadata.labels.get(self.config.label) or None

    def remote(self, resource: Resource) -> bool:
        return self.site_of(resource) is not None

    def factories(self, local: Mapping[str, ProviderFactory]) -> Mapping[str, ProviderFactory]:
        return {key: self._wrap(key, factory) for key, factory in local.items()}

    def credentials(
        self, remote: Sequence[Resource], resources: Mapping[Address, Resource]
    ) -> tuple[dict[str, str], list[Diagnostic]]:
        """Each site's workers fingerprint the secrets its resources use; a site without a
        live worker gets a warning naming it (its resources will be Unreachable)."""
        by_site: dict[str, list[Resource]] = {}
        for resource in remote:
            by_site.setdefault(self.site_of(resource) or "", []).append(resource)
        found: dict[str, str] = {}
        notes: list[Diagnostic] = []

        def ask(site: str) -> tuple[dict[str, str], list[Diagnostic]]:
            return self._fingerprints(site, by_site[site], resources)

        with ThreadPoolExecutor(max_workers=max(1, len(by_site))) as pool:
            for fingerprints, diagnostics in pool.map(ask, sorted(by_site)):
                found.update(fingerprints)
                notes.extend(diagnostics)
        return found, notes

    # -- sending and waiting ------------------------------------------------------------

    def live_sites(self, *, fresh: bool = False) -> set[str]:
        """Sites with at least one live worker (cached for a second: one scan per plan)."""
        now = time.monotonic()
        if fresh or self._live is None or now - self._live[0] > 1.0:
            try:
                sites = set(live_workers(self.client))
            except redis.RedisError as exc:
                log.warning("cannot read worker heartbeats: %s", REDACTOR(str(exc)))
                sites = set()
            self._live = (now, sites)
        return self._live[1]

    def overview(self) -> list[dict[str, Any]]:
        """Workers (last heartbeat, tasks in flight) and queue depth, per site; a broker that
        cannot be reached (down, a certificate refused) is a MetalformError saying why."""
        try:
            if self.config.redis_broker:
                return overview(self.client, time.time())
            return overview(self.client, time.time(), lambda s: amqp_queue_depths(self.app, s))
        except (redis.RedisError, OperationalError, AMQPError, OSError) as exc:
            raise MetalformError(
                f"cannot read the site workers from the broker {self.config.broker}: "
                f"{REDACTOR(str(exc))}"
            ) from None

    def send(self, site: str, task: str, body: dict[str, Any], timeout: float) -> str:
        """Sign and publish one task; returns the reply key to wait on."""
        reply = f"{REPLY_PREFIX}{uuid.uuid4().hex}"
        envelope = sign(
            {**body, "task": task, "site": site, "reply": reply, "id": reply},
            self.config.task_key,
            ttl=timeout,
        )
        try:
            self.app.send_task(
                task,
                args=[envelope],
                queue=queue_of(site),
                compression="zlib",  # resource documents: 50 KB per 100 servers, 2 KB zipped
                expires=timeout,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise SiteUnavailable(site=site, why=f"the broker failed: {exc}") from None
        except AttributeError as exc:
            # kombu publishing on a channel whose connection a broker restart closed (see
            # transport.py): the broker was lost, not a bug of ours.
            log.debug("publishing to site %s on a closed channel", site, exc_info=True)
            raise SiteUnavailable(
                site=site, why=f"the broker connection was lost ({exc})"
            ) from None
        return reply

    def wait(self, site: str, replies: Sequence[str], timeout: float) -> Replies:
        """Answers by reply key; those missing at the deadline are absent (never blocks past
        it: each BLPOP is a short slice, and a broker error ends the wait: a restarted Redis
        has lost the reply lists, so nothing more can come)."""
        deadline = time.monotonic() + timeout
        pending = set(replies)
        out = Replies()
        answers = out.answers
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                got = self.client.blpop(sorted(pending), timeout=max(0.1, min(_SLICE, left)))
            except redis.RedisError as exc:
                out.failure = REDACTOR(str(exc))
                log.warning("site %s: waiting for workers failed: %s", site, out.failure)
                break
            if got is None:
                continue
            key, raw = got
            key = key.decode() if isinstance(key, bytes) else key
            answers[key] = unpack_reply(raw)
            pending.discard(key)
        return out

    def call(self, site: str, task: str, body: dict[str, Any], timeout: float) -> Any:
        """One task, its answer or SiteUnavailable; observed for the metrics."""
        started = time.monotonic()
        ok = False
        try:
            if site not in self.live_sites():
                raise SiteUnavailable(site=site, why="no live worker")
            reply = self.send(site, task, body, timeout)
            replies = self.wait(site, [reply], timeout)
            answer = replies.answers.get(reply)
            if answer is None:
                raise SiteUnavailable(site=site, why=replies.why_missing(timeout))
            ok = "error" not in answer
            return answer
        finally:
            self._observe(site, task, time.monotonic() - started, ok)

    def _observe(self, site: str, task: str, seconds: float, ok: bool) -> None:
        if self.observer is not None:
            self.observer(site, task.rsplit(".", 1)[-1], seconds, ok)

    def _fingerprints(
        self, site: str, members: Sequence[Resource], resources: Mapping[Address, Resource]
    ) -> tuple[dict[str, str], list[Diagnostic]]:
        users = users_of_credentials(members, resources)
        try:
            if site not in self.live_sites():
                raise SiteUnavailable(site=site, why="no live worker")
            if not users:
                return {}, []
            # Only the Credentials (and what they refer to) cross: the worker resolves those,
            # not the thousands of resources that use them.
            used = [resources[a] for n in users if (a := f"Credential/{n}") in resources]
            needed = closure(used, resources)
            answer = self.call(
                site,
                FINGERPRINT_TASK,
                {"resources": documents(needed), "credentials": sorted(users)},
                self.config.read_deadline,
            )
        except SiteUnavailable as exc:
            return {}, [
                Diagnostic(
                    severity=Severity.WARNING,
                    message=f"{exc}: its {len(members)} resource(s) are Unreachable",
                )
            ]
        if "error" in answer:
            return {}, [Diagnostic(severity=Severity.WARNING, message=answer["error"]["message"])]
        notes = []
        for name, message in sorted(answer["missing"].items()):
            credential = resources.get(f"Credential/{name}")
            shown = ", ".join(sorted(users.get(name, []))[:5])
            notes.append(
                Diagnostic(
                    severity=Severity.ERROR,
                    address=f"Credential/{name}",
                    location=credential.location if credential else None,
                    message=f"{message}; needed by {shown}",
                )
            )
        return dict(answer["fingerprints"]), notes

    def _wrap(self, key: str, factory: ProviderFactory) -> ProviderFactory:
        def make(context: ProviderContext) -> Provider:
            local = factory(context)
            everything = context.resources
            routed = any(
                self.remote(r) and key in drivers(r, everything) for r in everything.values()
            )
            if not routed:
                return local
            cls = type(
                f"Routed{type(local).__name__}",
                (RoutedProvider,),
                {"name": local.name, "kinds": local.kinds, "operations": local.operations},
            )
            provider: Provider = cls(key, local, self, context)
            return provider

        return make


class RoutedProvider:
    """One driver's provider: resources without a site here, the others on their site."""

    name: ClassVar[str] = "routed"
    kinds: ClassVar[frozenset[str]] = frozenset()
    operations: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self, key: str, local: Provider, router: SiteRouter, context: ProviderContext
    ) -> None:
        self.key = key
        self.local = local
        self.router = router
        self.context = context
        self.run = uuid.uuid4().hex
        """Names this session's actions: a redelivered task is recognised by it."""
        self._shared: dict[str, Any] = {}
        """Fact values the answers share (BIOS registries), by digest: one copy per plan."""

    def endpoint(self, resource: Resource) -> str:
        return self.local.endpoint(resource)

    def read(self, resources: Sequence[Resource]) -> Mapping[Address, LiveResource]:
        by_site: dict[str | None, list[Resource]] = {}
        for resource in resources:
            by_site.setdefault(self.router.site_of(resource), []).append(resource)
        out: dict[Address, LiveResource] = {}

        def read_one(site: str | None) -> Mapping[Address, LiveResource]:
            batch = by_site[site]
            return self.local.read(batch) if site is None else self._read_site(site, batch)

        with ThreadPoolExecutor(max_workers=len(by_site) or 1) as pool:
            for live in pool.map(read_one, list(by_site)):
                out.update(live)
        return out

    def _read_site(self, site: str, batch: Sequence[Resource]) -> dict[Address, LiveResource]:
        config = self.router.config
        if site not in self.router.live_sites():
            why = f"site {site} has no live worker (no heartbeat within {config.heartbeat_ttl}s)"
            return {r.address: unreachable(r.address, why) for r in batch}
        started = time.monotonic()
        chunks = [batch[i : i + config.chunk] for i in range(0, len(batch), config.chunk)]
        sent: dict[str, Sequence[Resource]] = {}
        out: dict[Address, LiveResource] = {}
        try:
            for chunk in chunks:
                body = {
                    "driver": self.key,
                    "settings": self._settings(),
                    "batch": [r.address for r in chunk],
                    "resources": documents(closure(chunk, self.context.resources)),
                }
                sent[self.router.send(site, READ_TASK, body, config.read_deadline)] = chunk
        except SiteUnavailable as exc:
            why = str(exc)
            return {r.address: unreachable(r.address, why) for r in batch}
        replies = self.router.wait(site, list(sent), config.read_deadline)
        answers = replies.answers
        for reply, chunk in sent.items():
            answer = answers.get(reply)
            if answer is None or "error" in answer:
                why = (
                    answer["error"]["message"]
                    if answer
                    else f"site {site}: {replies.why_missing(config.read_deadline)}"
                )
                out.update({r.address: unreachable(r.address, why) for r in chunk})
                continue
            out.update(lives_from_json(answer, self._shared))
        ok = all(reply in answers for reply in sent)
        self.router._observe(site, READ_TASK, time.monotonic() - started, ok)
        return out

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        site = self.router.site_of(resource)
        if site is None:
            return self.local.execute(action, resource)
        timeout = self.context.operation_timeout + action.expect.settle_seconds + EXECUTE_MARGIN
        body = {
            "driver": self.key,
            "settings": self._settings(),
            "run": self.run,
            "address": resource.address,
            "action": action.model_dump(mode="json", by_alias=True),
            "resources": documents(closure([resource], self.context.resources)),
        }
        try:
            answer = self.router.call(site, EXECUTE_TASK, body, timeout)
        except SiteUnavailable as exc:
            raise UnreachableError(endpoint=f"site {site}", cause=str(exc)) from None
        if "error" in answer:
            raise remote_error(answer["error"])
        return live_from_json(answer["live"])

    def _settings(self) -> dict[str, float]:
        """The central timeouts and limits, so a worker's provider behaves as one in this
        process would."""
        c = self.context
        return {
            "timeout": c.timeout,
            "retries": c.retries,
            "operationTimeout": c.operation_timeout,
            "parallelism": c.limiter.parallelism,
            "perEndpoint": c.limiter.per_endpoint,
        }

    def close(self) -> None:
        self.local.close()
