"""The lab BMC's UpdateService, FirmwareInventory and TaskService routes (emulator process only).

The resources come from the lab driver (`LabDriver.firmware_inventory`, `simple_update`,
`push_update`, `tasks`); see `metalform.lab.redfish_firmware` for what they do. Which update
methods the UpdateService publishes (SimpleUpdate, `MultipartHttpPushUri`) follows the lab's
`/lab/v1/firmware` settings; a method it does not publish answers 405.
"""

from __future__ import annotations

import json
from typing import Any

import flask

from metalform.lab.redfish_firmware import (
    INVENTORY,
    MULTIPART_PUSH,
    SIMPLE_UPDATE,
    TASKS,
    UpdateSettings,
    check_pushed,
)

APPLY_TIMES = ["Immediate"]
"""The `@Redfish.OperationApplyTime` values a multipart push may ask for."""


def _respond(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    return flask.Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, code: str, message: str) -> Any:
    return _respond({"error": {"code": code, "message": message}}, status)


def _collection(kind: str, path: str, name: str, members: list[dict[str, Any]]) -> Any:
    return _respond(
        {
            "@odata.type": f"#{kind}.{kind}",
            "@odata.id": path,
            "Name": name,
            "Members": [{"@odata.id": m["@odata.id"]} for m in members],
            "Members@odata.count": len(members),
        }
    )


class FirmwareRoutes:
    """Route handlers bound to the emulator app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.stock_root = app.view_functions["root_resource"]

    def install(self) -> None:
        app = self.app
        app.view_functions["root_resource"] = self.root
        app.view_functions["UpdateService.update_service_resource"] = self.update_service
        app.view_functions["UpdateService.update_service_simple_update"] = self.simple_update
        app.view_functions["simple_task_service"] = self.task_service
        app.add_url_rule(
            MULTIPART_PUSH, "lab_multipart_push", self.multipart_push, methods=["POST"]
        )
        app.add_url_rule(INVENTORY, "lab_firmware_inventory", self.inventory)
        app.add_url_rule(f"{INVENTORY}/<member>", "lab_firmware_member", self.member)
        app.add_url_rule(TASKS, "lab_tasks", self.tasks)
        app.add_url_rule(f"{TASKS}/<task_id>", "lab_task", self.task)

    def root(self) -> Any:
        response = self.stock_root()
        if not isinstance(response, flask.Response) or response.status_code != 200:
            return response
        doc = json.loads(response.get_data())
        doc["Tasks"] = {"@odata.id": "/redfish/v1/TaskService"}  # the ServiceRoot property
        doc["UpdateService"] = {"@odata.id": "/redfish/v1/UpdateService"}
        response.set_data(json.dumps(doc))
        return response

    @property
    def settings(self) -> UpdateSettings:
        settings: UpdateSettings = self.app.systems.firmware_settings
        return settings

    def update_service(self) -> Any:
        doc: dict[str, Any] = {
            "@odata.type": "#UpdateService.v1_11_0.UpdateService",
            "@odata.id": "/redfish/v1/UpdateService",
            "Id": "UpdateService",
            "Name": "Update Service",
            "ServiceEnabled": True,
            "Status": {"State": "Enabled", "Health": "OK"},
            "FirmwareInventory": {"@odata.id": INVENTORY},
            "Actions": {},
        }
        if self.settings.simple:
            doc["Actions"]["#UpdateService.SimpleUpdate"] = {
                "target": SIMPLE_UPDATE,
                "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"],
            }
        if self.settings.multipart:
            doc["MultipartHttpPushUri"] = MULTIPART_PUSH
            doc["MultipartHttpPushUri@Redfish.OperationApplyTimeSupport"] = {
                "@odata.type": "#Settings.v1_3_5.OperationApplyTimeSupport",
                "SupportedValues": APPLY_TIMES,
            }
        return _respond(doc)

    def simple_update(self) -> Any:
        if not self.settings.simple:
            return _not_offered("SimpleUpdate")
        body = flask.request.get_json(silent=True) or {}
        task = self.app.systems.simple_update(body.get("ImageURI"), body.get("Targets"))
        return _respond(task, 202, {"Location": task["@odata.id"]})

    def multipart_push(self) -> Any:
        """A multipart/form-data upload: `UpdateParameters` (JSON) and `UpdateFile`."""
        if not self.settings.multipart:
            return _not_offered("MultipartHttpPushUri")
        request = flask.request
        upload = request.files.get("UpdateFile")
        raw = request.form.get("UpdateParameters")
        if raw is None and "UpdateParameters" in request.files:
            raw = request.files["UpdateParameters"].read().decode("utf-8", "replace")
        try:
            params = json.loads(raw) if raw is not None else None
        except ValueError:
            params = None
        if upload is None or not isinstance(params, dict):
            return _error(
                400,
                "Base.1.0.ActionParameterMissing",
                "a multipart update needs an UpdateParameters JSON part and an UpdateFile part",
            )
        apply_time = params.get("@Redfish.OperationApplyTime", "Immediate")
        if apply_time not in APPLY_TIMES:
            return _error(
                400,
                "Base.1.0.ActionParameterNotSupported",
                f"@Redfish.OperationApplyTime {apply_time!r} is not supported",
            )
        # Lab images are a few bytes; a real BMC would stream the part to its flash area.
        data = upload.read()
        images = self.app.systems.images_dir
        task = self.app.systems.push_update(
            params, lambda member: check_pushed(data, member, images)
        )
        return _respond(task, 202, {"Location": task["@odata.id"]})

    def inventory(self) -> Any:
        members = self.app.systems.firmware_inventory()
        return _collection("SoftwareInventoryCollection", INVENTORY, "Firmware", members)

    def member(self, member: str) -> Any:
        return _respond(self.app.systems.firmware_member(member))

    def task_service(self) -> Any:
        return _respond(
            {
                "@odata.type": "#TaskService.v1_2_0.TaskService",
                "@odata.id": "/redfish/v1/TaskService",
                "Id": "TaskService",
                "Name": "Task Service",
                "ServiceEnabled": True,
                "CompletedTaskOverWritePolicy": "Oldest",
                "Tasks": {"@odata.id": TASKS},
            }
        )

    def tasks(self) -> Any:
        return _collection("TaskCollection", TASKS, "Tasks", self.app.systems.tasks())

    def task(self, task_id: str) -> Any:
        return _respond(self.app.systems.task(task_id))


def _not_offered(what: str) -> Any:
    return _error(405, "Base.1.0.ActionNotSupported", f"this UpdateService does not offer {what}")
