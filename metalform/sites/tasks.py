"""The tasks a site's worker runs: read, execute (at most once in effect), fingerprints.

Every task body is a signed envelope (`signing.py`); a task for another site is refused too.
The worker resolves Credentials from its own environment and files, and runs the real
provider found through the `metalform.providers` entry points.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.exceptions import Reject

from metalform.sites.app import (
    EXECUTE_TASK,
    FINGERPRINT_TASK,
    READ_TASK,
    REPLY_PREFIX,
    REPLY_TTL,
    STARTED_PREFIX,
)
from metalform.sites.signing import ForgedTask, verify
from metalform.sites.wire import (
    error_json,
    from_documents,
    live_json,
    lives_json,
    pack_reply,
)
from reconciler.concurrency import DEFAULT_PARALLELISM, DEFAULT_PER_ENDPOINT, Limiter
from reconciler.credentials import fingerprint_key
from reconciler.engine import CredentialResolver
from reconciler.errors import MetalformError
from reconciler.model import Action, Address, Resource
from reconciler.model.credentials import CredentialSpec
from reconciler.model.live import unreachable
from reconciler.provider import Provider, ProviderContext, ProviderFactory, installed_providers
from reconciler.secrets import REDACTOR, SecretUnavailable, fingerprint, resolve

log = logging.getLogger("metalform.sites.worker")
STARTED_TTL = 24 * 3600


@dataclass
class WorkerState:
    """What one worker process serves and counts (shown by its heartbeat)."""

    site: str
    key: bytes = field(repr=False)
    label: str
    base_dir: Path | None = None
    factories: Mapping[str, ProviderFactory] = field(default_factory=installed_providers)
    parallelism: int = DEFAULT_PARALLELISM
    per_endpoint: int = DEFAULT_PER_ENDPOINT
    in_flight: int = 0
    processed: int = 0
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    limiters: dict[tuple[int, int], Limiter] = field(default_factory=dict)

    def limiter(self, settings: Mapping[str, Any]) -> Limiter:
        """The limiter for the sender's parallelism and per-endpoint limit, shared by every
        task of this worker: a BMC's request slots hold across tasks running at once, and
        each task reads its batch as many at once as one process would."""
        key = (
            int(settings.get("parallelism", self.parallelism)),
            int(settings.get("perEndpoint", self.per_endpoint)),
        )
        with self.lock:
            found = self.limiters.get(key)
            if found is None:
                found = self.limiters[key] = Limiter(*key)
            return found

    def count(self, delta: int, *, done: bool = False) -> None:
        with self.lock:
            self.in_flight += delta
            self.processed += 1 if done else 0


def _verified(state: WorkerState, envelope: object, task: str) -> dict[str, Any]:
    """The body of a task signed for this site; a forged one is logged and dropped."""
    try:
        body = verify(envelope, state.key)
        if body.get("site") != state.site:
            raise ForgedTask(why=f"it is for site {body.get('site')!r}, not {state.site!r}")
        if body.get("task") != task:
            raise ForgedTask(why=f"its body is for {body.get('task')!r}, not {task!r}")
    except ForgedTask as exc:
        with state.lock:
            state.refused += 1
        log.error("site %s: %s (task %s)", state.site, exc, task)
        raise Reject(str(exc), requeue=False) from None
    return body


def _provider(
    state: WorkerState, body: dict[str, Any], resources: Mapping[Address, Resource]
) -> Provider:
    driver = str(body["driver"])
    if driver not in state.factories:
        raise MetalformError(f"this worker has no provider for driver {driver!r}")
    settings = body.get("settings", {})
    context = ProviderContext(
        limiter=state.limiter(settings),
        credential=CredentialResolver(resources, state.base_dir),
        timeout=float(settings.get("timeout", 10.0)),
        retries=int(settings.get("retries", 2)),
        operation_timeout=float(settings.get("operationTimeout", 600.0)),
        resources=resources,
    )
    return state.factories[driver](context)


def _own(state: WorkerState, resource: Resource) -> None:
    site = resource.metadata.labels.get(state.label)
    if site != state.site:
        raise MetalformError(f"{resource.address} is not of site {state.site!r}")


def read(state: WorkerState, body: dict[str, Any]) -> dict[str, Any]:
    everything = from_documents(body["resources"])
    batch = [everything[a] for a in body["batch"]]
    for resource in batch:
        _own(state, resource)
    provider = _provider(state, body, everything)
    try:
        try:
            live = provider.read(batch)
        except MetalformError as exc:
            message = REDACTOR(str(exc))
            live = {r.address: unreachable(r.address, message) for r in batch}
        return lives_json(live)
    finally:
        provider.close()


def execute(state: WorkerState, body: dict[str, Any], first: Callable[[str], bool]) -> Any:
    """Run one action, unless a previous delivery of this very task already did it.

    `first(key)` marks the task as begun and says whether this is its first start (False: a
    worker died running it, and the broker delivered it again). Then the resource is read back
    first: when it already shows what the action expects, it is not run again (a reboot is
    never done twice).
    """
    everything = from_documents(body["resources"])
    action = Action.model_validate(body["action"])
    resource = everything[body["address"]]
    _own(state, resource)
    provider = _provider(state, body, everything)
    try:
        if not first(f"{STARTED_PREFIX}{body['run']}:{action.id}"):
            live = provider.read([resource])[resource.address]
            if live.reachable and not action.expect.mismatches(live.state, live.pending):
                log.warning(
                    "site %s: #%s %s %s was already done by a previous delivery; not run again",
                    state.site,
                    action.id,
                    action.address,
                    action.operation,
                )
                return {"live": live_json(live), "skipped": True}
        try:
            live = provider.execute(action, resource)
        except MetalformError as exc:
            return {"error": error_json(exc)}
        return {"live": live_json(live)}
    finally:
        provider.close()


def fingerprints(state: WorkerState, body: dict[str, Any]) -> dict[str, Any]:
    """Fingerprints of the named Credentials, resolved here, with the shared key."""
    everything = from_documents(body["resources"])
    key = fingerprint_key()
    found: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in body["credentials"]:
        credential = everything.get(f"Credential/{name}")
        if credential is None or not isinstance(credential.spec, CredentialSpec):
            continue
        try:
            value = resolve(
                credential.spec.secret,
                base_dir=state.base_dir,
                what=f"the secret of Credential/{name} on site {state.site}",
            )
        except SecretUnavailable as exc:
            missing[name] = REDACTOR(str(exc))
            continue
        found[name] = fingerprint(value, key)
    return {"fingerprints": found, "missing": missing}


def register(app: Celery, state: WorkerState, client: redis.Redis) -> None:
    """The three tasks, on `app`, each checking its signature first and pushing its answer
    onto the reply list the signed body names."""

    def first(key: str) -> bool:
        return bool(client.set(key, "1", nx=True, ex=STARTED_TTL))

    def run(name: str, work: Callable[[dict[str, Any]], Any]) -> Callable[..., None]:
        def task(envelope: object) -> None:
            body = _verified(state, envelope, name)
            state.count(+1)
            try:
                answer = work(body)
            except MetalformError as exc:
                answer = {"error": error_json(exc)}
            except Exception as exc:  # a provider bug: answer it, never leave the sender waiting
                log.exception("site %s: task %s failed", state.site, name)
                answer = {"error": error_json(MetalformError(f"internal error: {exc!r}"))}
            finally:
                state.count(-1, done=True)
            reply = str(body["reply"])
            if not reply.startswith(REPLY_PREFIX):
                raise Reject("bad reply key", requeue=False)
            with client.pipeline() as pipe:
                pipe.rpush(reply, pack_reply({"task": body["id"], **answer}))
                pipe.expire(reply, REPLY_TTL)
                pipe.execute()

        task.__name__ = name.rsplit(".", 1)[-1]
        return task

    app.task(name=READ_TASK)(run(READ_TASK, lambda b: read(state, b)))
    app.task(name=EXECUTE_TASK)(run(EXECUTE_TASK, lambda b: execute(state, b, first)))
    app.task(name=FINGERPRINT_TASK)(run(FINGERPRINT_TASK, lambda b: fingerprints(state, b)))
