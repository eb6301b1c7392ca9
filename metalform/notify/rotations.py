"""Rotations of a BMC login secret, as the audit trail and `credential.rotated` tell them.

A rotation is what one apply did to one Credential: the BMCs whose `account.rotate` action
succeeded, and the keyed fingerprints (reconciler.credentials; never a value) of the secret
before (`spec.previous`) and after (`spec.password`). The server records it in its store and
emits `credential.rotated`; the CLI sends the same event with `--notify`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from reconciler.credentials import fingerprint_key
from reconciler.model import ActionStatus, Plan
from reconciler.model.credentials import CredentialSpec
from reconciler.secrets import SecretUnavailable, fingerprint, resolve

ROTATE = "account.rotate"


@dataclass(frozen=True)
class Rotation:
    credential: str
    bmcs: list[str]
    """The addresses of the Servers whose BMC now takes the new secret."""
    fingerprint_before: str | None
    """Of `spec.previous`; None when it cannot be read any more (removed, variable unset)."""
    fingerprint_after: str | None

    def payload(self, **extra: Any) -> dict[str, Any]:
        """The `credential.rotated` event's data: names, addresses and fingerprints only."""
        return {
            **extra,
            "credential": self.credential,
            "addresses": list(self.bmcs),
            "bmcs": len(self.bmcs),
            "fingerprintBefore": self.fingerprint_before,
            "fingerprintAfter": self.fingerprint_after,
            "message": f"Credential/{self.credential}: {len(self.bmcs)} BMC(s) moved to the new "
            f"secret (fingerprint {self.fingerprint_before or 'unknown'} -> "
            f"{self.fingerprint_after or 'unknown'})",
        }


def rotations(
    plan: Plan,
    statuses: Mapping[int, ActionStatus | str],
    *,
    base_dir: Path | None,
    key: bytes | None = None,
) -> list[Rotation]:
    """The rotations an apply of `plan` made, from its actions' final statuses (by id)."""
    done: dict[str, list[str]] = {}
    for action in plan.actions:
        status = statuses.get(action.id)
        if action.operation != ROTATE or str(getattr(status, "value", status)) != "succeeded":
            continue
        name = str(action.params.get("credential", ""))
        done.setdefault(name, []).append(action.address)
    if not done:
        return []
    key = key if key is not None else fingerprint_key()
    return [
        Rotation(
            credential=name,
            bmcs=sorted(addresses),
            fingerprint_before=_previous_fingerprint(plan, name, base_dir, key),
            fingerprint_after=plan.credential_fingerprints.get(name),
        )
        for name, addresses in sorted(done.items())
    ]


def _previous_fingerprint(plan: Plan, name: str, base_dir: Path | None, key: bytes) -> str | None:
    document = plan.resources.get(f"Credential/{name}")
    if document is None:
        return None
    try:
        spec = CredentialSpec.model_validate(document.get("spec", {}))
    except ValidationError:
        return None
    if spec.previous is None:
        return None
    try:
        value = resolve(
            spec.previous, base_dir=base_dir, what=f"the previous secret of Credential/{name}"
        )
    except SecretUnavailable:
        return None
    return fingerprint(value, key)
