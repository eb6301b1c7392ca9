"""Firmware through Redfish: read UpdateService/FirmwareInventory and TaskService, update, reset.

Operations (params):
- `firmware.update` {component, version, image: {url, sha256}}: the image's SHA-256 is checked
  here first (a wrong image is never handed to the BMC), then the image is uploaded to the
  UpdateService's `MultipartHttpPushUri` when it has one (`firmware_push`), else `SimpleUpdate`
  targets the component with the URL; the task is followed to its end. A task already running
  for the component is attached to instead, and a component already at the version or staged
  with this image is not flashed again: an apply that died mid-update resumes without a
  second flash.
- `firmware.wait` {component, task}: follow a task found running at plan time.
- `firmware.reset` {components}: restart the system when one of the components still runs
  another version than the plan expects (a staged image); nothing when all are active.

A failed task fails the action with the BMC's own message. Tasks are polled every
`POLL_SECONDS` until `extra["redfish.firmwareTimeout"]` (default an hour) has passed.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import sushy

from providers.redfish import firmware_mapping as fm
from providers.redfish import firmware_push as push
from providers.redfish.client import BmcConnection
from providers.redfish.uploads import UploadJournal
from reconciler.errors import PermanentError, ProviderError, TemporaryError
from reconciler.model import Action, LiveResource, Resource, is_of
from reconciler.model.hardware import ServerSpec
from reconciler.secrets import REDACTOR

if TYPE_CHECKING:
    from providers.redfish import RedfishProvider

log = logging.getLogger("metalform.providers.redfish.firmware")

OPERATIONS = frozenset({"firmware.update", "firmware.wait", "firmware.reset"})
POLL_SECONDS = 0.5
DEFAULT_TIMEOUT = 3600.0
IMAGE_CHUNK = 1 << 20


def wanted(resource: Resource) -> bool:
    """Only a Server that declares a baseline pays for reading firmware and tasks."""
    return is_of(resource, ServerSpec) and resource.spec.firmware is not None


def _value(member: Any) -> Any:
    return getattr(member, "value", member)


def read_members(conn: BmcConnection, system_id: str) -> dict[str, fm.Member] | None:
    """The system's FirmwareInventory members by key; None when the BMC has no inventory."""
    if "UpdateService" not in (conn.root.json or {}):
        return None
    service = conn.root.get_update_service()
    if not service.json.get("FirmwareInventory"):
        return None
    members = [
        fm.Member(
            id=str(item.identity),
            name=str(item.name),
            version=str(item.version or ""),
            updateable=item.updateable is True,
            path=str(item.path),
            related=tuple(
                str(r.get("@odata.id", "")) for r in item.related_item or [] if isinstance(r, dict)
            ),
        )
        for item in service.firmware_inventory.get_members()
    ]
    return fm.members_of(members, system_id)


def read_tasks(
    conn: BmcConnection, members: Mapping[str, fm.Member], uploads: UploadJournal
) -> list[dict[str, Any]]:
    """The update tasks of the system's members (TaskService), oldest first; a pushed one
    names the image the journal recorded for it."""
    if "Tasks" not in (conn.root.json or {}):  # ServiceRoot.Tasks links the TaskService
        return []
    found = []
    for task in conn.root.get_task_service().tasks.get_members():
        facts = fm.task_facts(task.json, members)
        if facts is None:
            continue
        if facts["imageUri"] is None and facts["path"]:
            start = task.json.get("StartTime")
            facts["imageUri"] = uploads.image_of(conn.key.base_url, str(facts["path"]), start)
        found.append(facts)
    return found


def observe(
    conn: BmcConnection,
    system: Mapping[str, Any],
    state: dict[str, Any],
    facts: dict[str, Any],
    uploads: UploadJournal,
) -> None:
    """Add the firmware versions and update tasks of a system (its JSON) to its live state."""
    members = read_members(conn, str(system.get("Id")))
    if members is None:
        return
    versions, inventory = fm.inventory_state(members)
    state.update(versions)
    facts["firmware"] = inventory
    facts["firmwareTasks"] = read_tasks(conn, members, uploads)


class FirmwareOps:
    """The firmware operations of one RedfishProvider."""

    def __init__(self, provider: RedfishProvider) -> None:
        self._provider = provider
        context = provider.context
        self._timeout = float(context.extra.get("redfish.firmwareTimeout", DEFAULT_TIMEOUT))  # type: ignore[arg-type]
        self._http_timeout = context.timeout

    def execute(self, action: Action, resource: Resource) -> LiveResource:
        params = action.params
        if action.operation == "firmware.reset":
            self._reset(action, resource)
            return self._provider.read_one(resource)
        key = params.get("component")
        if not isinstance(key, str):
            raise PermanentError(f"{action.operation} needs params.component")
        live = self._provider.read_one(resource)
        if action.operation == "firmware.wait":
            task = self._task(live, key, params.get("task"))
            if task is not None:
                self._follow(resource, key, task)
        else:
            self._update(resource, live, key, params)
        return self._provider.read_one(resource)

    # -- update ------------------------------------------------------------------------------

    def _update(
        self, resource: Resource, live: LiveResource, key: str, params: Mapping[str, Any]
    ) -> None:
        version, image = params.get("version"), params.get("image")
        if not isinstance(image, Mapping) or not isinstance(version, str):
            raise PermanentError("firmware.update needs params.version and params.image")
        url, digest = str(image.get("url", "")), str(image.get("sha256", "")).lower()
        inventory = live.facts.get("firmware") or {}
        if key not in inventory:
            raise PermanentError(f"{resource.address}: the BMC has no firmware component {key!r}")
        if live.state.get(fm.PREFIX + key) == version:
            return
        tasks = [t for t in live.facts.get("firmwareTasks", []) if t.get("target") == key]
        running = next((t for t in tasks if t["state"] not in fm.TERMINAL_TASK_STATES), None)
        if running is not None:
            log.info("%s: attaching to the running update task %s", resource.address, running["id"])
            self._follow(resource, key, running)
            return
        if any(t["awaitingReset"] and t["imageUri"] == url for t in tasks):
            return  # staged by an earlier apply: the reset activates it
        path = self._start(resource, url, digest, str(inventory[key]["path"]))
        self._follow(resource, key, {"id": path.rstrip("/").rsplit("/", 1)[-1], "path": path})

    def _start(self, resource: Resource, url: str, digest: str, target: str) -> str:
        """Check the image and hand it to the BMC, pushed when it takes uploads; the task path."""
        service: dict[str, Any] = self._provider.attempt(
            resource, lambda c: dict(c.root.get_update_service().json), what="UpdateService"
        )
        uri = push.push_uri(service)
        if uri is not None:
            # On disk, not in memory: images run to hundreds of megabytes.
            with tempfile.TemporaryFile() as image:
                self._check_image(url, digest, image)
                return self._push(resource, service, uri, image, url, digest, target)
        if not push.offers_simple_update(service):
            raise PermanentError(
                f"{resource.address}: the BMC's UpdateService offers neither "
                f"{push.MULTIPART} nor SimpleUpdate; nothing was flashed"
            )
        self._check_image(url, digest)
        return self._simple_update(resource, url, target)

    def _check_image(self, url: str, digest: str, keep: IO[bytes] | None = None) -> None:
        """The image at `url` has the SHA-256 the baseline names; written to `keep` if given."""
        sha = hashlib.sha256()
        try:
            with requests.get(url, stream=True, timeout=self._http_timeout) as response:
                response.raise_for_status()
                for chunk in response.iter_content(IMAGE_CHUNK):
                    sha.update(chunk)
                    if keep is not None:
                        keep.write(chunk)
        except requests.RequestException as exc:
            raise TemporaryError(
                REDACTOR(f"cannot download the firmware image {url}: {exc.__class__.__name__}")
            ) from None
        if sha.hexdigest() != digest:
            raise PermanentError(
                REDACTOR(
                    f"the firmware image {url} has SHA-256 {sha.hexdigest()}, the baseline "
                    f"says {digest}; nothing was flashed"
                )
            )

    def _push(
        self,
        resource: Resource,
        service: Mapping[str, Any],
        uri: str,
        image: IO[bytes],
        url: str,
        digest: str,
        target: str,
    ) -> str:
        """Upload the checked image to the BMC's multipart push URI; the task path."""
        params = push.parameters(service, target)
        filename = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or "image"

        def post(conn: BmcConnection) -> tuple[str, str]:
            image.seek(0)
            location = push.push(conn, uri, params, image, filename, self._http_timeout)
            return location, conn.key.base_url

        # Never retried: a second upload could start a second flash.
        location, bmc = self._provider.attempt(resource, post, what="multipart update", retries=0)
        self._record(resource, bmc, location, url, digest)
        return location

    def _record(self, resource: Resource, bmc: str, task: str, url: str, digest: str) -> None:
        """Journal the push before anything waits on it: the task names no image, and a plan
        after a crash must still see this image staged (see `uploads`)."""
        try:
            doc = self._provider.attempt(resource, lambda c: c.get_json(task), what="task")
            start = doc.get("StartTime")
        except ProviderError as exc:  # a BMC busy with the image may not answer yet
            log.info("%s: reading task %s: %s", resource.address, task, exc)
            start = None
        self._provider.uploads.record(bmc, task, start, url, digest)

    def _simple_update(self, resource: Resource, url: str, target: str) -> str:
        """Ask the BMC to update `target` from `url`; the path of the task it started."""

        def post(conn: BmcConnection) -> str:
            service = conn.root.get_update_service()
            https = url.startswith("https:")
            protocol = sushy.UPDATE_PROTOCOL_HTTPS if https else sushy.UPDATE_PROTOCOL_HTTP
            monitor = service.simple_update(url, targets=[target], transfer_protocol=protocol)
            return str(monitor.task_monitor_uri)

        # Never retried: a second POST could start a second flash.
        return self._provider.attempt(resource, post, what="SimpleUpdate", retries=0)

    # -- tasks -------------------------------------------------------------------------------

    def _task(self, live: LiveResource, key: str, task_id: Any) -> dict[str, Any] | None:
        """The task to follow, or None when it has ended well (nothing to wait for)."""
        tasks: list[dict[str, Any]] = [
            t for t in live.facts.get("firmwareTasks", []) if t.get("target") == key
        ]
        found = next((t for t in tasks if t.get("id") == task_id), None) or next(
            (t for t in reversed(tasks) if t["state"] not in fm.TERMINAL_TASK_STATES), None
        )
        if found is None:
            return None
        if found["state"] in fm.TERMINAL_TASK_STATES:
            _raise_if_failed(live.address, key, found)
            return None
        return found

    def _follow(self, resource: Resource, key: str, task: Mapping[str, Any]) -> None:
        """Poll the task until it ends; PermanentError with the BMC's message if it failed."""
        path = str(task.get("path") or f"/redfish/v1/TaskService/Tasks/{task['id']}")
        deadline = time.monotonic() + self._timeout
        last = None
        while True:
            try:
                doc = self._provider.attempt(resource, lambda c: c.get_json(path), what="task")
            except TemporaryError as exc:  # a BMC busy flashing may miss a poll
                log.info("%s: polling task %s: %s", resource.address, path, exc)
                doc = None
            if doc is not None:
                state = str(doc.get("TaskState") or "")
                percent = doc.get("PercentComplete")
                if percent != last:
                    log.info("%s: firmware %s: %s%%", resource.address, key, percent)
                    last = percent
                if state in fm.TERMINAL_TASK_STATES:
                    facts = {"state": state, "message": _messages(doc)}
                    _raise_if_failed(resource.address, key, facts)
                    return
            if time.monotonic() + POLL_SECONDS > deadline:
                raise PermanentError(
                    f"{resource.address}: the firmware update of {key} did not end within "
                    f"{self._timeout:.0f}s (task {path})"
                )
            time.sleep(POLL_SECONDS)

    # -- reset -------------------------------------------------------------------------------

    def _reset(self, action: Action, resource: Resource) -> None:
        """Restart the system when a component still runs another version than expected."""
        live = self._provider.read_one(resource)
        pending = {
            path: want
            for path, want in action.expect.current.items()
            if live.state.get(path) != want
        }
        if not pending:
            log.info("%s: every firmware component is active; no reset needed", resource.address)
            return
        self._provider.power(resource, "power.reset")


def _messages(doc: Mapping[str, Any]) -> str:
    messages = [m for m in doc.get("Messages") or [] if isinstance(m, dict)]
    return "; ".join(str(m.get("Message", "")) for m in messages if m.get("Message"))


def _raise_if_failed(address: str, key: str, task: Mapping[str, Any]) -> None:
    if task.get("state") != "Completed":
        why = task.get("message") or "no message"
        raise PermanentError(
            REDACTOR(f"{address}: the firmware update of {key} ended {task.get('state')}: {why}")
        )
