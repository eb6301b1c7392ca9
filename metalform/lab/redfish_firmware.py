"""Firmware on the lab BMC: UpdateService, FirmwareInventory, TaskService and an image server.

sushy-tools' emulator has no UpdateService worth the name; the lab's has, per system, a few
firmware components (`DEFAULT_FIRMWARE`) and `SimpleUpdate`, which fetches the image over HTTP
(from the lab's image server, `/lab/v1/images/<file>`), checks its SHA-256 against the digest
published next to it (`<file>.sha256`, as vendor download sites do) and starts a task that runs
for a configurable time and can be made to fail. When the lab's settings say so the
UpdateService also publishes `MultipartHttpPushUri` (and may stop offering SimpleUpdate): an
uploaded image is checked against the digest the lab published for its component and version
and runs the same task. BIOS firmware is staged until the next power-on
or restart (the task ends with `Update.1.0.AwaitToActivate`); BMC firmware is active at once.

An image is a small JSON document `{"component": "BIOS", "version": "1.2.0"}`: the version the
component runs once it is active. State (versions, staged images, tasks) lives in the system
documents the lab driver persists; a task's progress is computed from its start time, so it
keeps running while nobody is looking and survives the client that started it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

SIMPLE_UPDATE = "/redfish/v1/UpdateService/Actions/UpdateService.SimpleUpdate"
MULTIPART_PUSH = "/redfish/v1/UpdateService/upload"
SIMPLE, MULTIPART = "simple", "multipart"
"""The update methods, as `UpdateSettings.count` counts them."""
INVENTORY = "/redfish/v1/UpdateService/FirmwareInventory"
TASKS = "/redfish/v1/TaskService/Tasks"
IMAGES = "/lab/v1/images/"
SETTINGS = "/lab/v1/firmware"
IMAGE_FETCH_TIMEOUT = 10.0
IMAGES_DIR = "images"
"""The image server's files, in the peer's state directory."""

DEFAULT_FIRMWARE: tuple[dict[str, Any], ...] = (
    {"id": "BIOS", "version": "1.0.0", "activation": "Reset", "updateable": True},
    {"id": "BMC", "version": "2.0.0", "activation": "Immediate", "updateable": True},
    {"id": "CPLD", "version": "1.0", "activation": "Reset", "updateable": False},
)

LAB_IMAGES = (("BIOS", "1.2.0"), ("BMC", "2.1.0"))
"""The images `metalform lab up` publishes (inventory-example/ pins their digests)."""

StartResponse = Callable[..., Any]


def image_bytes(component: str, version: str) -> bytes:
    """The lab image of `component` at `version` (deterministic, so its digest can be pinned)."""
    return json.dumps({"component": component, "version": version}, sort_keys=True).encode()


def publish_image(images_dir: Path, component: str, version: str) -> tuple[str, str]:
    """Write an image and its digest for the image server; (file name, sha256)."""
    data = image_bytes(component, version)
    digest = hashlib.sha256(data).hexdigest()
    name = f"{component.lower()}-{version}.json"
    images_dir.mkdir(parents=True, exist_ok=True)
    (images_dir / name).write_bytes(data)
    (images_dir / f"{name}.sha256").write_text(f"{digest}  {name}\n", encoding="utf-8")
    return name, digest


def _now_iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


class UpdateSettings:
    """How long an update runs, whether it fails, which update methods the UpdateService
    publishes (`simpleUpdate`, `multipart`) and how many updates of each were asked for."""

    def __init__(self, seconds: float = 2.0) -> None:
        self._lock = threading.Lock()
        self.seconds = seconds
        self.fail_with: str | None = None
        self.simple = True
        self.multipart = False
        self.counts = {SIMPLE: 0, MULTIPART: 0}

    def count(self, kind: str = SIMPLE) -> tuple[float, str | None]:
        """Count one update request of `kind`; (seconds, failWith) for its task."""
        with self._lock:
            self.counts[kind] += 1
            return self.seconds, self.fail_with

    def document(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seconds": self.seconds,
                "failWith": self.fail_with,
                "simpleUpdate": self.simple,
                "multipart": self.multipart,
                "simpleUpdates": self.counts[SIMPLE],
                "multipartUpdates": self.counts[MULTIPART],
            }

    def change(self, body: dict[str, Any]) -> None:
        with self._lock:
            if "seconds" in body:
                self.seconds = float(body["seconds"])
            if "failWith" in body:
                self.fail_with = body["failWith"] or None
            if "simpleUpdate" in body:
                self.simple = bool(body["simpleUpdate"])
            if "multipart" in body:
                self.multipart = bool(body["multipart"])
            if body.get("resetCount"):
                self.counts = {SIMPLE: 0, MULTIPART: 0}


class LabImages:
    """The lab's firmware image server and update switches, served in front of authentication.

    `GET /lab/v1/images/<file>`: an image or its `.sha256`; `GET /lab/v1/firmware`: the
    settings and the number of SimpleUpdate and multipart push requests; `POST /lab/v1/firmware`
    {seconds, failWith, simpleUpdate, multipart, resetCount}: change them.
    """

    def __init__(self, images_dir: Path, settings: UpdateSettings) -> None:
        self.images_dir = images_dir
        self.settings = settings

    def handle(
        self, environ: dict[str, Any], start_response: StartResponse, path: str
    ) -> list[bytes] | None:
        """The answer to a `/lab/v1/` request this serves, or None."""
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith(IMAGES) and method == "GET":
            name = path[len(IMAGES) :]
            file = self.images_dir / name
            if "/" in name or name.startswith(".") or not file.is_file():
                return _answer(start_response, "404 Not Found", b"no such image\n", "text/plain")
            return _answer(start_response, "200 OK", file.read_bytes(), "application/octet-stream")
        if path == SETTINGS:
            if method == "POST":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(size) or b"{}")
                self.settings.change(body)
            data = json.dumps(self.settings.document()).encode()
            return _answer(start_response, "200 OK", data, "application/json")
        return None


def _answer(start_response: StartResponse, status: str, data: bytes, kind: str) -> list[bytes]:
    start_response(status, [("Content-Type", kind), ("Content-Length", str(len(data)))])
    return [data]


def seed_firmware(doc: dict[str, Any], configured: Iterable[dict[str, Any]]) -> None:
    """Give a system document its firmware components (kept when it already has them)."""
    firmware = doc.setdefault("firmware", {})
    for entry in configured:
        firmware.setdefault(entry["id"], {**entry, "staged": None})
    doc.setdefault("tasks", [])


def fetch_image(image_uri: str, target: str) -> tuple[str | None, str | None]:
    """(version, None) for a good image of `target`; (None, why) when the BMC refuses it."""
    try:
        response = requests.get(image_uri, timeout=IMAGE_FETCH_TIMEOUT)
        response.raise_for_status()
        published = requests.get(image_uri + ".sha256", timeout=IMAGE_FETCH_TIMEOUT)
        published.raise_for_status()
    except requests.RequestException as exc:
        return None, f"cannot download {image_uri}: {exc.__class__.__name__}"
    digest = hashlib.sha256(response.content).hexdigest()
    expected = published.text.split()[0].lower() if published.text.split() else ""
    if digest != expected:
        return None, f"image {image_uri} failed its SHA-256 check ({digest} != {expected})"
    try:
        manifest = json.loads(response.content)
        component, version = str(manifest["component"]), str(manifest["version"])
    except (ValueError, KeyError, TypeError):
        return None, f"image {image_uri} is not a firmware image"
    if component != target:
        return None, f"image {image_uri} is for {component}, not {target}"
    return version, None


def check_pushed(data: bytes, target: str, images_dir: Path) -> tuple[str | None, str | None]:
    """(version, None) for an uploaded image of `target` whose SHA-256 is that of the image the
    lab published for its component and version; (None, why) when the BMC refuses it."""
    try:
        manifest = json.loads(data)
        component, version = str(manifest["component"]), str(manifest["version"])
    except (ValueError, KeyError, TypeError):
        return None, "the uploaded file is not a firmware image"
    if component != target:
        return None, f"the uploaded image is for {component}, not {target}"
    known = images_dir / f"{component.lower()}-{version}.json.sha256"
    if not known.is_file():
        return None, f"no known image of {component} {version} to check the upload against"
    digest = hashlib.sha256(data).hexdigest()
    expected = (known.read_text(encoding="utf-8").split() or [""])[0].lower()
    if digest != expected:
        return None, (
            f"the uploaded image of {component} {version} failed its SHA-256 check "
            f"({digest} != {expected})"
        )
    return version, None


def new_task(
    system: dict[str, Any],
    member: str,
    image_uri: str | None,
    version: str | None,
    seconds: float,
    fail_with: str | None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A task record for one update; progress is derived from its start time.

    `image_uri` None: a multipart push, whose Payload is the request's `UpdateParameters`.
    """
    number = len(system["tasks"]) + 1
    started = time.time()
    targets = [f"{INVENTORY}/{system['name']}-{member}"]
    if image_uri is None:
        body, target_uri = {**(request or {}), "Targets": targets}, MULTIPART_PUSH
    else:
        body, target_uri = {"ImageURI": image_uri, "Targets": targets}, SIMPLE_UPDATE
    return {
        "id": f"{system['name']}-{number}",
        "component": member,
        "version": version,
        "imageUri": image_uri,
        "start": started,
        "seconds": seconds if version is not None else 0.0,
        "failWith": fail_with,
        "state": "Running",
        "messages": [],
        "payload": json.dumps(body),
        "targetUri": target_uri,
    }


def settle_tasks(system: dict[str, Any], now: float) -> bool:
    """End the tasks whose time is up; True when the system document changed."""
    changed = False
    for task in system["tasks"]:
        if task["state"] != "Running" or now < task["start"] + task["seconds"]:
            continue
        changed = True
        component = system["firmware"][task["component"]]
        why = task["failWith"] if task["version"] is not None else task.get("refusal")
        if why:
            task.update(state="Exception", messages=[_message("Update.1.0.UpdateFailed", why)])
        elif component["activation"] == "Immediate":
            component.update(version=task["version"], staged=None)
            done = f"{task['component']} {task['version']} is active"
            task.update(state="Completed", messages=[_message("Update.1.0.UpdateSuccessful", done)])
        else:
            component["staged"] = {"version": task["version"], "task": task["id"]}
            wait = (
                f"{task['component']} {task['version']} is staged; it activates at the next reset"
            )
            task.update(state="Completed", messages=[_message("Update.1.0.AwaitToActivate", wait)])
    return changed


def activate_staged(system: dict[str, Any]) -> None:
    """The machine boots: staged firmware becomes active, its task says so."""
    settle_tasks(system, time.time())
    for member, component in system["firmware"].items():
        staged = component.get("staged")
        if not staged:
            continue
        component.update(version=staged["version"], staged=None)
        for task in system["tasks"]:
            if task["id"] == staged["task"]:
                done = f"{member} {staged['version']} is active"
                task["messages"] = [_message("Update.1.0.UpdateSuccessful", done)]


def _message(message_id: str, text: str) -> dict[str, Any]:
    return {"MessageId": message_id, "Message": text, "Severity": "OK"}


def task_document(task: dict[str, Any], now: float) -> dict[str, Any]:
    """A task record as a Redfish Task."""
    running = task["state"] == "Running"
    if running:
        elapsed = (now - task["start"]) / task["seconds"] if task["seconds"] else 1.0
        percent = min(99, int(elapsed * 100))
    else:
        percent = 100
    status = "Critical" if task["state"] == "Exception" else "OK"
    doc: dict[str, Any] = {
        "@odata.type": "#Task.v1_7_0.Task",
        "@odata.id": f"{TASKS}/{task['id']}",
        "Id": task["id"],
        "Name": f"Firmware update of {task['component']}",
        "TaskState": task["state"],
        "TaskStatus": status,
        "PercentComplete": percent,
        "StartTime": _now_iso(task["start"]),
        "Messages": task["messages"]
        or [_message("Update.1.0.UpdateInProgress", f"updating {task['component']}")],
        "Payload": {
            "TargetUri": task.get("targetUri", SIMPLE_UPDATE),
            "HttpOperation": "POST",
            "HttpHeaders": [],
            "JsonBody": task["payload"],
        },
    }
    if not running:
        doc["EndTime"] = _now_iso(task["start"] + task["seconds"])
    return doc


def inventory_member(system: dict[str, Any], member: str) -> dict[str, Any]:
    """One firmware component of a system as a Redfish SoftwareInventory."""
    component = system["firmware"][member]
    identity = f"{system['name']}-{member}"
    return {
        "@odata.type": "#SoftwareInventory.v1_10_0.SoftwareInventory",
        "@odata.id": f"{INVENTORY}/{identity}",
        "Id": identity,
        "Name": member,
        "Version": component["version"],
        "Updateable": component["updateable"],
        "Status": {"State": "Enabled", "Health": "OK"},
        "RelatedItem": [{"@odata.id": f"/redfish/v1/Systems/{system['uuid']}"}],
    }
