"""Table-driven tests of the pure planner: desired YAML + live JSON -> expected plan JSON.

Each folder of `cases/` holds `desired/` (a desired-state tree), `live.json` (address ->
LiveResource fields), optional `options.json` (targets, exclude, refreshOnly,
setUnknownPasswords) and
`expected.json`: the plan's changes, actions (without read-back expectations) and
diagnostics. To regenerate after a deliberate change, run with METALFORM_UPDATE_GOLDEN=1
and review the diff.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from providers.ipmi import IpmiProvider
from providers.redfish import RedfishProvider
from reconciler.load import load
from reconciler.model import LiveResource
from reconciler.plan import PlanOptions, make_plan
from reconciler.userdata import repository_files

CASES = Path(__file__).parent / "cases"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
# What each driver really offers: a case for an operation a provider lacks shows the error.
OPERATIONS = {"redfish": RedfishProvider.operations, "ipmi": IpmiProvider.operations}


def load_live(case: Path) -> dict[str, LiveResource]:
    """A case's `live.json`, by address."""
    return {
        address: LiveResource(address=address, **fields)
        for address, fields in json.loads((case / "live.json").read_text()).items()
    }


def run_case(case: Path) -> dict[str, Any]:
    desired = load(case / "desired")
    live = load_live(case)
    options_file = case / "options.json"
    options = json.loads(options_file.read_text()) if options_file.exists() else {}
    plan = make_plan(
        desired,
        live,
        PlanOptions(
            now=NOW,
            targets=frozenset(options.get("targets", [])),
            exclude=frozenset(options.get("exclude", [])),
            refresh_only=options.get("refreshOnly", False),
            set_unknown_passwords=options.get("setUnknownPasswords", False),
            operations=OPERATIONS,
            files=repository_files(case / "desired"),
        ),
    )
    data = json.loads(plan.to_json())
    for action in data["actions"]:
        for volatile in ("expect", "endpoint", "description"):
            action.pop(volatile)
    return {
        "changes": data["changes"],
        "actions": data["actions"],
        "diagnostics": data["diagnostics"],
        "summary": data["summary"],
        "failureBudget": data["failureBudget"],
        "liveFingerprints": sorted(data["liveFingerprints"]),
    }


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir() if p.is_dir()))
def test_case(case: str) -> None:
    folder = CASES / case
    got = run_case(folder)
    expected_file = folder / "expected.json"
    if os.environ.get("METALFORM_UPDATE_GOLDEN"):
        expected_file.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    expected = json.loads(expected_file.read_text())
    assert got == expected


def test_every_case_has_expectations() -> None:
    folders = [p for p in CASES.iterdir() if p.is_dir()]
    assert len(folders) >= 15
    assert all((p / "expected.json").exists() for p in folders)
