"""driftActions in the server: report-only drift is told in drift.detected and never applied
automatically; accepted and suspended resources are not drift."""

from __future__ import annotations

from metalform.server.drift_rules import reported_drift, why_not_auto_applied
from metalform.server.resource_status import after_plan, drifted
from reconciler.engine import PlanRun
from reconciler.gather import Gathered
from reconciler.load import load
from reconciler.model import SyncStatus
from reconciler.plan import PlanOptions, make_plan
from tests.unit.test_plan_cases import CASES, NOW, OPERATIONS, load_live


def planned(case: str) -> PlanRun:
    desired = load(CASES / case / "desired")
    live = load_live(CASES / case)
    plan = make_plan(desired, live, PlanOptions(now=NOW, operations=OPERATIONS))
    return PlanRun(plan, desired, Gathered(dict(live), 0.0))


def test_report_only_drift_holds_the_automatic_apply() -> None:
    run = planned("report-only-drift")
    assert reported_drift(run) == {"Server/n1": ["power"]}
    why = why_not_auto_applied(run)
    assert why == "report-only drift on Server/n1 (power): not applied automatically"


def test_remediated_drift_is_applied_automatically() -> None:
    assert why_not_auto_applied(planned("ignore-fields-not-planned")) is None


def test_accepted_and_suspended_are_not_drift() -> None:
    run = planned("accepted-drift-until")
    assert drifted(run) == ["Server/n2", "Server/n3"]
    paused = planned("paused-suspended")
    assert drifted(paused) == ["Server/n2"]
    sync = {u.address: u.sync for u in after_plan(paused)}
    assert sync["Server/n1"] is SyncStatus.SUSPENDED
    assert sync["Server/n3"] is SyncStatus.SUSPENDED
    assert sync["Server/n2"] is SyncStatus.OUT_OF_SYNC
