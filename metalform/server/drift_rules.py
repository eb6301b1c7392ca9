"""What a drift plan may do on its own: the drift Policies say to report and never fix, and
so whether an automatic apply may start."""

from __future__ import annotations

from reconciler.drift import report_only
from reconciler.engine import PlanRun
from reconciler.model.policy import PolicySpec


def reported_drift(run: PlanRun) -> dict[str, list[str]]:
    """The drifted fields `Policy.spec.driftActions` says to report and never fix on its own,
    by address."""
    policies = run.desired.of_kind("Policy", PolicySpec)
    return report_only(policies, run.desired.resources, run.plan.changes)


def why_not_auto_applied(run: PlanRun) -> str | None:
    """Why an automatic apply of this plan must not start (report-only drift), or None.

    The plan would fix drift a Policy says to only report: a person applies it, or changes
    Git or the Policy.
    """
    reported = reported_drift(run)
    touched = {a.address for a in run.plan.runnable}
    held = sorted(address for address in reported if address in touched)
    if not held:
        return None
    shown = ", ".join(f"{a} ({', '.join(reported[a])})" for a in held[:5])
    more = f" and {len(held) - 5} more" if len(held) > 5 else ""
    return f"report-only drift on {shown}{more}: not applied automatically"
