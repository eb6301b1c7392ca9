"""The pure parts of firmware: version comparison and the Redfish inventory and task mapping."""

from __future__ import annotations

import json

import pytest

from providers.redfish import firmware_mapping as fm
from reconciler.planners.firmware import compare_versions


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        ("1.2.0", "1.2.0", 0),
        ("2.9.7", "2.10.1", -1),
        ("2.10", "2.9.9", 1),
        ("2.1", "2.1.0", 0),
        ("v1.4", "1.4", 0),
        ("U46", "U47", None),
        ("1.2a", "1.2", None),
        ("1.2.0\n", "1.2.0", 0),
    ],
)
def test_versions_compare_as_dotted_numbers_else_only_equal_or_not(
    current: str, desired: str, expected: int | None
) -> None:
    assert compare_versions(current, desired) == expected


def member(identity: str, name: str, *related: str) -> fm.Member:
    path = f"/redfish/v1/UpdateService/FirmwareInventory/{identity}"
    return fm.Member(identity, name, "1.0", True, path, tuple(related))


def test_a_systems_members_are_its_own_and_the_bmcs_keyed_by_unique_name() -> None:
    members = [
        member("a-BIOS", "BIOS", "/redfish/v1/Systems/a"),
        member("b-BIOS", "BIOS", "/redfish/v1/Systems/b"),
        member("BMC", "BMC"),
        member("nic-1", "NIC", "/redfish/v1/Systems/a"),
        member("nic-2", "NIC", "/redfish/v1/Systems/a"),
    ]
    mine = fm.members_of(members, "a")
    assert sorted(mine) == ["BIOS", "BMC", "nic-1", "nic-2"]
    assert mine["BIOS"].id == "a-BIOS"
    state, facts = fm.inventory_state(mine)
    assert state["firmware.BIOS"] == "1.0"
    assert facts["nic-1"]["name"] == "NIC"


def test_a_task_is_matched_to_its_component_through_its_payload() -> None:
    mine = fm.members_of([member("a-BIOS", "BIOS", "/redfish/v1/Systems/a")], "a")
    body = {"ImageURI": "http://x/bios.bin", "Targets": [mine["BIOS"].path]}
    doc = {
        "Id": "7",
        "TaskState": "Completed",
        "PercentComplete": 100,
        "Messages": [{"MessageId": "Update.1.0.AwaitToActivate", "Message": "staged"}],
        "Payload": {"JsonBody": json.dumps(body)},
    }
    task = fm.task_facts(doc, mine)
    assert task is not None
    assert (task["target"], task["imageUri"], task["awaitingReset"]) == (
        "BIOS",
        "http://x/bios.bin",
        True,
    )
    other = {**doc, "Payload": {"JsonBody": json.dumps({**body, "Targets": ["/x/b-BIOS"]})}}
    assert fm.task_facts(other, mine) is None
    assert fm.task_facts({**doc, "Payload": {"JsonBody": "not json"}}, mine) is None
