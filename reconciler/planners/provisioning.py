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
from reconciler.model.hardware import PowerState, ProvisioningState
from reconciler.planners.server import Draft, PlanContext
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
_NEEDS_COMMISSIONING = {"New", "FailedCommissioning"}
_HOLDS_IMAGE = {"Deployed", "Allocated", "FailedDeployment"}


@dataclass
class ProvisioningPlan:
    diff: list[DiffEntry] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)


def plan_provisioning(
    server: Resource, live: LiveResource, ctx: PlanContext, after: tuple[str, ...] = ()
) -> ProvisioningPlan:
    """What converges the Server's MAAS machine; `after`: the Server's drafts that go first."""
    result = ProvisioningPlan()
    provisioning = server.spec.provisioning
    if provisioning is None:
        return result
    address = server.address

    def diag(severity: Severity, message: str, *path: str) -> None:
        location = ctx.locate(address, ("spec", "provisioning", *path)) or server.location
        field_name = ".".join(("spec.provisioning", *path)) if path else "spec.provisioning"
        result.diagnostics.append(Diagnostic(severity=severity, message=message,
                                             address=address, field=field_name,
                                             location=location))

    missing = live.facts.get(MISSING)
    if missing:
        diag(Severity.ERROR, str(missing))
        return result
    current = live.state.get(STATE)
    if current is None:
        diag(Severity.WARNING, "MAAS did not report this machine; provisioning is not planned")
        return result

    want = provisioning.state
    declared = provisioning.model_fields_set
    deployed = want is ProvisioningState.DEPLOYED
    # MAAS has no "Released" status: a released machine is Ready again.
    target = "Deployed" if deployed else "Ready"

    if deployed and server.spec.power is PowerState.OFF:
        diag(Severity.WARNING, "power: Off and state: Deployed disagree: MAAS powers a machine "
             "on to deploy it, and a deployed machine is meant to run", "state")

    rendered: RenderedUserData | None = None
    if deployed and provisioning.user_data is not None:
        try:
            if ctx.files is None:
                raise UserDataError("this plan was made without the repository's files, so "
                                    f"template {provisioning.user_data.template} cannot be read")
            rendered = render_user_data(server, ctx.files)
        except UserDataError as exc:
            diag(Severity.ERROR, str(exc), "userData", "template")
            return result

    diff = result.diff
    if current != target:
        diff.append(DiffEntry(path=STATE, before=current, after=want.value))
    distro_drift = image_drift = False
    if deployed:
        if provisioning.distro_series is not None and \
                live.state.get(DISTRO) != provisioning.distro_series:
            distro_drift = True
            diff.append(DiffEntry(path=DISTRO, before=live.state.get(DISTRO),
                                  after=provisioning.distro_series))
        if rendered is not None and live.state.get(USER_DATA_HASH) != rendered.digest:
            image_drift = True
            diff.append(DiffEntry(path=USER_DATA_HASH, before=live.state.get(USER_DATA_HASH),
                                  after=rendered.digest))
    want_tags = sorted(set(provisioning.tags))
    live_tags = sorted(live.state.get(TAGS) or [])
    tags_drift = "tags" in declared and want_tags != live_tags
    if tags_drift:
        diff.append(DiffEntry(path=TAGS, before=live_tags, after=want_tags))

    drafts = result.drafts
    if tags_drift:
        drafts.append(Draft(
            key="provisioning.tags", operation="provisioning.tags", provider=PROVIDER,
            params={"add": [t for t in want_tags if t not in live_tags],
                    "remove": [t for t in live_tags if t not in want_tags]},
            expect=Expectation(current={TAGS: want_tags}),
            description="set MAAS tags"))

    if current in _IN_PROGRESS:
        if current != target or distro_drift or image_drift:
            diag(Severity.WARNING, f"the machine is {current} in MAAS; its lifecycle is planned "
                 "once that ends")
        return result

    chain: list[str] = list(after)

    def add(draft: Draft) -> None:
        draft.after = tuple(chain)
        draft.provider = PROVIDER
        drafts.append(draft)
        chain[:] = [draft.key]

    if current in _NEEDS_COMMISSIONING:
        add(Draft(key="provisioning.commission", operation="provisioning.commission", params={},
                  expect=Expectation(current={STATE: "Ready"}, settle_seconds=SETTLE_SECONDS),
                  description="commission in MAAS"))
        current = "Ready"

    redeploy = current == "Deployed" and deployed and (distro_drift or image_drift)
    if current in _HOLDS_IMAGE and (not deployed or redeploy or current == "FailedDeployment"):
        what = "redeploy" if redeploy else "release"
        add(Draft(key="provisioning.release", operation="provisioning.release", params={},
                  disruptive=current == "Deployed",
                  expect=Expectation(current={STATE: "Ready"}, settle_seconds=SETTLE_SECONDS),
                  description=f"release in MAAS ({what})" if redeploy
                  else "release in MAAS (the machine's disks are wiped of its OS)"))
        current = "Ready"

    if deployed and current == "Ready":
        params: dict[str, Any] = {}
        expected: dict[str, Any] = {STATE: "Deployed"}
        if provisioning.distro_series is not None:
            params["distroSeries"] = provisioning.distro_series
            expected[DISTRO] = provisioning.distro_series
        if rendered is not None:
            params["template"] = rendered.template
            params["userDataHash"] = rendered.digest
            params["userData"] = rendered.text
            expected[USER_DATA_HASH] = rendered.digest
        series = provisioning.distro_series or "the default series"
        add(Draft(key=DEPLOY_KEY, operation="provisioning.deploy", params=params,
                  disruptive=redeploy,
                  expect=Expectation(current=expected, settle_seconds=SETTLE_SECONDS),
                  description=f"{'redeploy' if redeploy else 'deploy'} {series}"
                  + (f" with user data from {rendered.template}" if rendered else "")))
    elif current not in ("Ready", "Deployed") and current != target:
        diag(Severity.WARNING, f"the machine is {current} in MAAS; Metalform does not move a "
             "machine out of that state")
    return result
