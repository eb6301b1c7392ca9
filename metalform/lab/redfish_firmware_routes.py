"""The lab BMC's UpdateService, FirmwareInventory and TaskService routes (emulator process only).

The resources come from the lab driver (`LabDriver.firmware_inventory`, `simple_update`,
`tasks`); see `metalform.lab.redfish_firmware` for what they do.
"""

from __future__ import annotations

import json
from typing import Any

import flask

from metalform.lab.redfish_firmware import INVENTORY, SIMPLE_UPDATE, TASKS


def _respond(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    return flask.Response(
        json.dumps(body), status=status, content_type="application/json", headers=headers
    )


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

    def update_service(self) -> Any:
        return _respond(
            {
                "@odata.type": "#UpdateService.v1_11_0.UpdateService",
                "@odata.id": "/redfish/v1/UpdateService",
                "Id": "UpdateService",
                "Name": "Update Service",
                "ServiceEnabled": True,
                "Status": {"State": "Enabled", "Health": "OK"},
                "FirmwareInventory": {"@odata.id": INVENTORY},
                "Actions": {
                    "#UpdateService.SimpleUpdate": {
                        "target": SIMPLE_UPDATE,
                        "TransferProtocol@Redfish.AllowableValues": ["HTTP", "HTTPS"],
                    }
                },
            }
        )

    def simple_update(self) -> Any:
        body = flask.request.get_json(silent=True) or {}
        task = self.app.systems.simple_update(body.get("ImageURI"), body.get("Targets"))
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
