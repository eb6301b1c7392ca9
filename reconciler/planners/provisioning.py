"""Planning a Server's MAAS lifecycle: commission, deploy, release, redeploy, tags.

Pure: the Server, its live state (the `provisioning.*` paths the maas provider reads) and the
plan context in; diff entries, action drafts and diagnostics out. User data is rendered here,
at plan time, so the plan shows exactly what will be deployed; the rendered text (which may
hold no secret, see reconciler.userdata) travels in the deploy action's params.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reconciler.model import Diagnostic, DiffEntry, Expectation, LiveResource, Resource, Severity
from reconciler.model.base import matches_any
from reconciler.model.hardware import PowerState, Provisioning, ProvisioningState, ServerSpec
from reconciler.planners.base import Draft, PlanContext
from reconciler.planners.diff import diff_declared
from reconciler.userdata import RenderedUserData, UserDataError, render_user_data

STATE = "provisioning.state"
DISTRO = "provisioning.distroSeries"
TAGS = "provisioning.tags"
USER_DATA_HASH = "provisioning.userDataHash"
MISSING = "provisioning.missing"
PROVIDER = "maas"
DEPLOY_KEY = "provisioning.deploy"
"""The key of the deploy draft: what other resources' drafts name to wait for a deployment."""

# MAAS can take a long while to install an OS; the provider itself waits for the end state,
# so the read-back only has to absorb MAAS's own lag.
SETTLE_SECONDS = 120.0

_IN_PROGRESS = {"Commissioning", "Deploying", "Releasing", "DiskErasing", "Testing"}
_HEADS_TO = {
    "Deploying": "Deployed",
    "Commissioning": "Ready",
    "Testing": "Ready",
    "Releasing": "Ready",
    "DiskErasing": "Ready",
}
"""Where a machine in transition ends up when it succeeds."""
WAIT = "provisioning.wait"
_NEEDS_COMMISSIONING = {"New", "FailedCommissioning"}
_HOLDS_IMAGE = {"Deployed", "Allocated", "FailedDeployment"}


@dataclass
class ProvisioningPlan:
    diff: list[DiffEntry] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def plan_provisioning(
    server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext, after: tuple[str, ...] = ()
) -> ProvisioningPlan:
    """What converges the Server's MAAS machine; `after`: the Server's drafts that go first."""
    result = ProvisioningPlan()
    provisioning = server.spec.provisioning
    if provisioning is None:
        return result
    current = _machine_state(server, live, ctx, result.diagnostics)
    if current is None:
        return result
    deployed = provisioning.state is ProvisioningState.DEPLOYED
    if deployed and server.spec.power is PowerState.OFF:
        result.diagnostics.append(
            _diagnostic(
                ctx,
                server,
                Severity.WARNING,
                "power: Off and state: Deployed disagree: MAAS "
                "powers a machine on to deploy it, and a deployed machine is meant to run",
                "state",
            )
        )
    try:
        rendered = _user_data(server, ctx) if deployed else None
    except UserDataError as exc:
        result.diagnostics.append(
            _diagnostic(ctx, server, Severity.ERROR, str(exc), "userData", "template")
        )
        return result
    # MAAS has no "Released" status: a released machine is Ready again.
    target = "Deployed" if deployed else "Ready"
    ignore = ctx.ignored(server)
    # An ignored (or accepted) status is left as it is: nothing commissions, releases,
    # deploys or waits, so the image is not compared either; the tags still are.
    held = current != target and matches_any(STATE, ignore)
    result.diff = _diff(server, live, current, target, rendered, ignore)
    if held:
        result.diff = [entry for entry in result.diff if entry.path == TAGS]
    drifted = {entry.path for entry in result.diff}
    if TAGS in drifted:
        result.drafts.append(_tags_draft(server, live))
    if held:
        return result
    reimage = DISTRO in drifted or USER_DATA_HASH in drifted
    if current in _IN_PROGRESS:
        if _HEADS_TO[current] == target and not reimage:
            # An apply that died while MAAS worked: wait for that transition, never start
            # a second one (the deploy key lets Aggregates wait for it as for a deploy).
            result.drafts.append(_wait_draft(current, target, after))
            return result
        if current != target or reimage:
            result.diagnostics.append(
                _diagnostic(
                    ctx,
                    server,
                    Severity.WARNING,
                    f"the machine is {current} in MAAS; its lifecycle is planned once that ends",
                )
            )
        return result
    result.drafts.extend(
        _lifecycle(server, current, reimage, rendered, after, ctx, result.diagnostics)
    )
    return result


def _wait_draft(current: str, target: str, after: tuple[str, ...]) -> Draft:
    return Draft(
        key=DEPLOY_KEY if target == "Deployed" else "provisioning.lifecycle",
        operation=WAIT,
        provider=PROVIDER,
        params={"until": target},
        after=after,
        expect=Expectation(current={STATE: target}, settle_seconds=SETTLE_SECONDS),
        reason=f"the machine is {current} in MAAS",
        description=f"wait for MAAS: {current} -> {target}",
    )


def _diagnostic(
    ctx: PlanContext, server: Resource[ServerSpec], severity: Severity, message: str, *path: str
) -> Diagnostic:
    """A diagnostic on the Server's `spec.provisioning` (or one of its fields)."""
    return ctx.diagnostic(
        server,
        severity,
        message,
        path=("spec", "provisioning", *path),
        field_name=".".join(("spec.provisioning", *path)),
    )


def _machine_state(
    server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext, diags: list[Diagnostic]
) -> str | None:
    """The machine's MAAS status, or None (and why) when there is no machine to plan for."""
    missing = live.facts.get(MISSING)
    if missing:
        diags.append(_diagnostic(ctx, server, Severity.ERROR, str(missing)))
        return None
    current = live.state.get(STATE)
    if current is None:
        diags.append(
            _diagnostic(
                ctx,
                server,
                Severity.WARNING,
                "MAAS did not report this machine; provisioning is not planned",
            )
        )
    return current


def _declared(server: Resource[ServerSpec]) -> Provisioning:
    """The Server's provisioning block: the steps below run only when it declares one."""
    provisioning = server.spec.provisioning
    if provisioning is None:
        raise ValueError(f"{server.address} declares no provisioning")
    return provisioning


def _user_data(server: Resource[ServerSpec], ctx: PlanContext) -> RenderedUserData | None:
    """The user data to deploy with, rendered now so the plan shows it; None when none."""
    user_data = _declared(server).user_data
    if user_data is None:
        return None
    if ctx.files is None:
        raise UserDataError(
            "this plan was made without the repository's files, so "
            f"template {user_data.template} cannot be read"
        )
    return render_user_data(server, ctx.files)


def _diff(
    server: Resource[ServerSpec],
    live: LiveResource,
    current: str,
    target: str,
    rendered: RenderedUserData | None,
    ignore: tuple[str, ...],
) -> list[DiffEntry]:
    """The status against its target (shown as declared), then the declared image and tags
    (less the `ignore` globs)."""
    provisioning = _declared(server)
    entries = []
    if current != target:
        entries.append(DiffEntry(path=STATE, before=current, after=provisioning.state.value))
    want: dict[str, Any] = {}
    if target == "Deployed" and provisioning.distro_series is not None:
        want[DISTRO] = provisioning.distro_series
    if target == "Deployed" and rendered is not None:
        want[USER_DATA_HASH] = rendered.digest
    if "tags" in provisioning.model_fields_set:
        want[TAGS] = sorted(set(provisioning.tags))
    # Tags are a set: compared sorted, whatever order MAAS lists them in.
    held = {**live.state, TAGS: sorted(live.state.get(TAGS) or [])}
    return [*entries, *diff_declared(want, held, ignore=ignore).entries]


def _tags_draft(server: Resource[ServerSpec], live: LiveResource) -> Draft:
    want_tags = sorted(set(_declared(server).tags))
    live_tags = sorted(live.state.get(TAGS) or [])
    return Draft(
        key="provisioning.tags",
        operation="provisioning.tags",
        provider=PROVIDER,
        params={
            "add": [t for t in want_tags if t not in live_tags],
            "remove": [t for t in live_tags if t not in want_tags],
        },
        expect=Expectation(current={TAGS: want_tags}),
        description="set MAAS tags",
    )


def _lifecycle(
    server: Resource[ServerSpec],
    current: str,
    reimage: bool,
    rendered: RenderedUserData | None,
    after: tuple[str, ...],
    ctx: PlanContext,
    diags: list[Diagnostic],
) -> list[Draft]:
    """Commission, release and deploy as needed, each after the one before."""
    deployed = _declared(server).state is ProvisioningState.DEPLOYED
    target = "Deployed" if deployed else "Ready"
    steps: list[Draft] = []
    if current in _NEEDS_COMMISSIONING:
        steps.append(
            Draft(
                key="provisioning.commission",
                operation="provisioning.commission",
                params={},
                expect=Expectation(current={STATE: "Ready"}, settle_seconds=SETTLE_SECONDS),
                description="commission in MAAS",
            )
        )
        current = "Ready"
    redeploy = current == "Deployed" and deployed and reimage
    if current in _HOLDS_IMAGE and (not deployed or redeploy or current == "FailedDeployment"):
        steps.append(_release_draft(redeploy, disruptive=current == "Deployed"))
        current = "Ready"
    if deployed and current == "Ready":
        steps.append(_deploy_draft(server, rendered, redeploy))
    elif current not in ("Ready", "Deployed") and current != target:
        diags.append(
            _diagnostic(
                ctx,
                server,
                Severity.WARNING,
                f"the machine is {current} in "
                "MAAS; Metalform does not move a machine out of that state",
            )
        )
    for step in steps:
        step.after, step.provider = after, PROVIDER
        after = (step.key,)
    return steps


def _release_draft(redeploy: bool, disruptive: bool) -> Draft:
    return Draft(
        key="provisioning.release",
        operation="provisioning.release",
        params={},
        disruptive=disruptive,
        expect=Expectation(current={STATE: "Ready"}, settle_seconds=SETTLE_SECONDS),
        description="release in MAAS (redeploy)"
        if redeploy
        else "release in MAAS (the machine's disks are wiped of its OS)",
    )


def _deploy_draft(
    server: Resource[ServerSpec], rendered: RenderedUserData | None, redeploy: bool
) -> Draft:
    """Deploy the declared series, with the user data rendered at plan time."""
    distro = _declared(server).distro_series
    params: dict[str, Any] = {}
    expected: dict[str, Any] = {STATE: "Deployed"}
    if distro is not None:
        params["distroSeries"] = distro
        expected[DISTRO] = distro
    if rendered is not None:
        params["template"] = rendered.template
        params["userDataHash"] = rendered.digest
        params["userData"] = rendered.text
        expected[USER_DATA_HASH] = rendered.digest
    return Draft(
        key=DEPLOY_KEY,
        operation="provisioning.deploy",
        params=params,
        disruptive=redeploy,
        expect=Expectation(current=expected, settle_seconds=SETTLE_SECONDS),
        description=f"{'redeploy' if redeploy else 'deploy'} {distro or 'the default series'}"
        + (f" with user data from {rendered.template}" if rendered else ""),
    )
