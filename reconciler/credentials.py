"""Credentials at plan time: every secret a plan needs is resolvable, and fingerprinted.

A missing variable or file is a plan error naming the Credential and the resources that use
it, before anything is contacted. Each secret is summarised by a keyed HMAC (never the value),
so a rotated secret shows in the plan's JSON and makes a saved plan stale.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path

from reconciler.model import (
    Address,
    Change,
    ChangeKind,
    Diagnostic,
    DiffEntry,
    Plan,
    Resource,
    Severity,
    find,
)
from reconciler.model.credentials import CredentialSpec
from reconciler.references import references
from reconciler.secrets import SecretUnavailable, fingerprint, resolve

KEY_ENV = "METALFORM_FINGERPRINT_KEY"
KEY_FILE = Path("~/.config/metalform/fingerprint.key")


def fingerprint_key() -> bytes:
    """The installation's fingerprint key: METALFORM_FINGERPRINT_KEY, else a file made once.

    Keyed, so that a fingerprint in a plan or a PR comment cannot be used to guess a weak
    password offline; one key per installation (or shared by server replicas) so that the
    same secret always has the same fingerprint.
    """
    value = os.environ.get(KEY_ENV)
    if value:
        return value.encode()
    path = KEY_FILE.expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except OSError:
        # A read-only home: fingerprints of this run are still consistent among themselves.
        return secrets.token_bytes(32)


USED_THROUGH = ("Provider/", "BmcProfile/")
"""Kinds whose Credentials are used on behalf of the resources referring to them (a Server's
account declared in its BmcProfile is set with that profile's Credential); other references
(an Aggregate's host Server) do not make their Credentials the referrer's."""


def users_of_credentials(
    chosen: Iterable[Resource], resources: Mapping[Address, Resource]
) -> dict[str, list[Address]]:
    """Credential name -> the resources of this plan that need it: directly, or through what
    they refer to (a Provider's credential, the accounts of a BmcProfile)."""
    users: dict[str, list[Address]] = {}
    for resource in chosen:
        for _, target in references(resource):
            names = []
            if target.startswith("Credential/"):
                names.append(target.removeprefix("Credential/"))
            elif target.startswith(USED_THROUGH) and target in resources:
                names += [
                    t.removeprefix("Credential/")
                    for _, t in references(resources[target])
                    if t.startswith("Credential/")
                ]
            for name in names:
                users.setdefault(name, []).append(resource.address)
    return users


def check_credentials(
    chosen: Iterable[Resource],
    resources: Mapping[Address, Resource],
    base_dir: Path | None,
    key: bytes,
) -> tuple[dict[str, str], list[Diagnostic]]:
    """Fingerprints of every Credential the plan needs, and an error for each missing one."""
    fingerprints: dict[str, str] = {}
    diagnostics: list[Diagnostic] = []
    for name, users in sorted(users_of_credentials(chosen, resources).items()):
        credential = find(resources, f"Credential/{name}", CredentialSpec)
        if credential is None:
            continue  # a dangling reference: load already reported it
        try:
            value = resolve(
                credential.spec.secret, base_dir=base_dir, what=f"the secret of Credential/{name}"
            )
        except SecretUnavailable as exc:
            shown = ", ".join(sorted(users)[:5]) + (
                f" and {len(users) - 5} more" if len(users) > 5 else ""
            )
            diagnostics.append(
                Diagnostic(
                    severity=Severity.ERROR,
                    address=credential.address,
                    location=credential.location,
                    message=f"{exc}; needed by {shown}",
                )
            )
            continue
        fingerprints[name] = fingerprint(value, key)
    return fingerprints, diagnostics


def with_rotations(plan: Plan, previous: Mapping[str, str]) -> Plan:
    """The plan, plus a change for every secret whose fingerprint differs from `previous`
    (the fingerprints of the last applied plan): a rotated secret shows in the plan as a
    changed fingerprint, never as a value. Pure."""
    rotated = [
        Change(
            address=f"Credential/{name}",
            action=ChangeKind.UPDATE,
            diff=[DiffEntry(path="secret (fingerprint)", before=previous[name], after=now)],
        )
        for name, now in sorted(plan.credential_fingerprints.items())
        if name in previous and previous[name] != now
    ]
    if not rotated:
        return plan
    summary = plan.summary.model_copy(update={"update": plan.summary.update + len(rotated)})
    return plan.model_copy(update={"changes": [*rotated, *plan.changes], "summary": summary})
