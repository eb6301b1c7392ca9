"""Planning a Server's BMC: the rotation of its login secret, its accounts and (through
`reconciler.planners.bmc_network`) its network services.

Pure. Live state paths (the providers' contract):
- `bmc.accounts.<username>.role` (Administrator|Operator|ReadOnly|other) and `.enabled`;
- `bmc.accounts.<username>.password`, for an account Git declares, where the provider can
  tell: `current` when it holds its Credential's secret, `other` when it holds another one
  (the Credential changed since); absent when unknown (it is then not compared);
- `bmc.login`: `current` when Metalform logged in with its Credential's `password`,
  `previous` when only the Credential's `previous` secret worked (a rotation to finish);
- `bmc.network.*`: see `reconciler.planners.bmc_network`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.model import (
    Address,
    Diagnostic,
    DiffEntry,
    Expectation,
    LiveResource,
    Resource,
    Severity,
    find,
    is_of,
)
from reconciler.model.bmc import BmcAccount, BmcNetwork, BmcProfileSpec
from reconciler.model.credentials import CredentialSpec
from reconciler.model.hardware import ServerSpec
from reconciler.planners.base import Draft, PlanContext
from reconciler.planners.bmc_network import BmcPlan, plan_network, unsupported
from reconciler.planners.diff import diff_declared

ACCOUNTS = "bmc.accounts."
LOGIN = "bmc.login"
PASSWORD = ".password"
SECRET_CURRENT, SECRET_OTHER = "current", "other"
"""Values of `bmc.login` and `bmc.accounts.<username>.password`: the Credential's secret, or
not (`bmc.login` says `previous`: only the Credential's previous secret logs in)."""


@dataclass(frozen=True)
class BmcBlocks:
    """The accounts and network a Server gets, its own or its profile's."""

    accounts: list[BmcAccount] | None
    prune: bool
    network: BmcNetwork | None
    profile: Resource[BmcProfileSpec] | None


def effective_blocks(
    server: Resource[ServerSpec], resources: Mapping[Address, Resource]
) -> BmcBlocks:
    bmc = server.spec.bmc
    profile = find(resources, f"BmcProfile/{bmc.profile}", BmcProfileSpec) if bmc.profile else None
    p = profile.spec if profile is not None else None
    return BmcBlocks(
        accounts=bmc.accounts if bmc.accounts is not None else (p.accounts if p else None),
        prune=bool(
            bmc.prune_accounts
            if bmc.prune_accounts is not None
            else (p.prune_accounts if p else False)
        ),
        network=bmc.network if bmc.network is not None else (p.network if p else None),
        profile=profile,
    )


def login_username(
    server: Resource[ServerSpec], resources: Mapping[Address, Resource]
) -> str | None:
    credential = find(resources, f"Credential/{server.spec.bmc.credential}", CredentialSpec)
    return credential.spec.username if credential is not None else None


def plan_bmc(server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext) -> BmcPlan:
    """Rotation first (everything else logs in with the new secret), then accounts, network."""
    result = BmcPlan([], [], [])
    blocks = effective_blocks(server, ctx.resources)
    if blocks.profile is not None:
        problem = _match_problem(blocks.profile, live.facts)
        if problem is not None:
            result.diagnostics.append(
                ctx.diagnostic(
                    server,
                    Severity.ERROR,
                    problem,
                    path=("spec", "bmc", "profile"),
                    field_name="spec.bmc.profile",
                )
            )
            return result
    _plan_rotation(server, live, ctx, result)
    first = tuple(d.key for d in result.drafts)
    if blocks.accounts is not None:
        _plan_accounts(server, live, ctx, blocks, result, first)
    if blocks.network is not None:
        plan_network(server, live, ctx, blocks.network, result, first)
    return result


def _plan_rotation(
    server: Resource[ServerSpec], live: LiveResource, ctx: PlanContext, result: BmcPlan
) -> None:
    name = server.spec.bmc.credential
    login = live.state.get(LOGIN)
    if login == "previous":
        result.entries.append(DiffEntry(path=LOGIN, before="previous secret", after="new secret"))
        result.drafts.append(
            Draft(
                key="rotate",
                operation="account.rotate",
                params={"credential": name, "username": login_username(server, ctx.resources)},
                expect=Expectation(current={LOGIN: "current"}),
                description=f"set the BMC login to the new secret of Credential/{name}",
            )
        )
    elif login == "current":
        removable = _previous_removable(server, ctx)
        if removable is not None:
            result.diagnostics.append(removable)


def _previous_removable(server: Resource[ServerSpec], ctx: PlanContext) -> Diagnostic | None:
    """Said once per Credential (by its first Server): every BMC is on the new secret."""
    name = server.spec.bmc.credential
    credential = find(ctx.resources, f"Credential/{name}", CredentialSpec)
    if credential is None or credential.spec.previous is None:
        return None
    users = sorted(
        r.address
        for r in ctx.resources.values()
        if is_of(r, ServerSpec) and r.spec.bmc.credential == name
    )
    if not users or users[0] != server.address:
        return None
    for address in users:
        seen = ctx.live.get(address)
        if seen is None or not seen.reachable or seen.state.get(LOGIN) != "current":
            return None
    location = ctx.locate(credential.address, ("spec", "previous"))
    return Diagnostic(
        severity=Severity.WARNING,
        address=credential.address,
        field="spec.previous",
        location=location or credential.location,
        message=f"every BMC using Credential/{name} ({len(users)}) logs in with its new "
        "secret: spec.previous can be removed",
    )


def _plan_accounts(
    server: Resource[ServerSpec],
    live: LiveResource,
    ctx: PlanContext,
    blocks: BmcBlocks,
    result: BmcPlan,
    after: tuple[str, ...],
) -> None:
    refused = unsupported(server, ctx, "account.create", "BMC accounts", "accounts")
    if refused is not None:
        result.diagnostics.append(refused)
        return
    login = login_username(server, ctx.resources)
    accounts = blocks.accounts or []
    declared = {a.username for a in accounts}
    for index, account in enumerate(accounts):
        if account.username == login and (
            not account.enabled or account.role.value != "Administrator"
        ):
            result.diagnostics.append(
                ctx.diagnostic(
                    server,
                    Severity.ERROR,
                    f"account {account.username!r} is the one Metalform logs in with; "
                    "it must stay an enabled Administrator",
                    path=("spec", "bmc", "accounts", index),
                    field_name=f"spec.bmc.accounts[{index}]",
                )
            )
            continue
        _plan_account(account, live, ctx, result, after, login=account.username == login)
    for username in _live_usernames(live):
        if username in declared:
            continue
        enabled = live.state.get(f"{ACCOUNTS}{username}.enabled")
        if not blocks.prune or username == login:
            if username != login:
                result.diagnostics.append(
                    ctx.diagnostic(
                        server,
                        Severity.WARNING,
                        f"BMC account {username!r} is not in Git (pruneAccounts: false)",
                    )
                )
            continue
        if enabled is False:
            continue
        path = f"{ACCOUNTS}{username}.enabled"
        result.entries.append(DiffEntry(path=path, before=enabled, after=False))
        result.drafts.append(
            Draft(
                key=f"account:{username}",
                operation="account.disable",
                params={"username": username},
                after=after,
                expect=Expectation(current={path: False}),
                description=f"disable BMC account {username} (not in Git)",
            )
        )


def _live_usernames(live: LiveResource) -> list[str]:
    return sorted(
        {
            path[len(ACCOUNTS) :].rsplit(".", 1)[0]
            for path in live.state
            if path.startswith(ACCOUNTS) and path.endswith(".role")
        }
    )


def _plan_account(
    account: BmcAccount,
    live: LiveResource,
    ctx: PlanContext,
    result: BmcPlan,
    after: tuple[str, ...],
    *,
    login: bool,
) -> None:
    """`login`: the account Metalform logs in with, whose password only a rotation sets."""
    prefix = f"{ACCOUNTS}{account.username}."
    want: dict[str, Any] = {
        prefix + "role": account.role.value,
        prefix + "enabled": account.enabled,
    }
    diff = diff_declared(want, live.state)
    password = f"{ACCOUNTS}{account.username}{PASSWORD}"
    # known only where the provider can tell (see the module); `other`: its Credential changed.
    # Unknown is set only when asked (`--set-unknown-passwords`): a hand-made account adopted.
    known = live.state.get(password)
    stale_password = not login and (
        known == SECRET_OTHER or (known is None and ctx.set_unknown_passwords)
    )
    if not diff and not stale_password:
        return
    result.entries.extend(diff.entries)
    exists = prefix + "role" in live.state
    params: dict[str, Any] = {"username": account.username}
    if exists:
        params.update({p.removeprefix(prefix): v for p, v in diff.changed.items()})
    else:
        params.update(
            role=account.role.value, enabled=account.enabled, credential=account.credential
        )
    if exists and stale_password:
        result.entries.append(
            DiffEntry(
                path=password,
                before="another secret" if known == SECRET_OTHER else "unknown",
                after=f"the secret of Credential/{account.credential}",
            )
        )
        params["credential"] = account.credential
        want[password] = SECRET_CURRENT
    result.drafts.append(
        Draft(
            key=f"account:{account.username}",
            operation="account.set" if exists else "account.create",
            params=params,
            after=after,
            expect=Expectation(current=want),
            description=_account_description(account, exists, bool(diff), stale_password),
        )
    )


def _account_description(
    account: BmcAccount, exists: bool, changed: bool, stale_password: bool
) -> str:
    if not exists:
        return f"create BMC account {account.username}"
    password = f"the password of BMC account {account.username} (Credential/{account.credential})"
    if stale_password and not changed:
        return f"set {password}"
    if stale_password:
        return f"update BMC account {account.username} and set {password}"
    return f"update BMC account {account.username}"


def _match_problem(profile: Resource[BmcProfileSpec], facts: Mapping[str, Any]) -> str | None:
    match = profile.spec.match
    if match is None:
        return None
    for field_name in ("manufacturer", "model"):
        want = getattr(match, field_name)
        got = facts.get(field_name)
        if want is not None and got != want:
            return (
                f"BmcProfile {profile.name!r} is for {field_name} {want!r}, "
                f"but the BMC reports {got!r}"
            )
    return None
