"""Which password each BMC account has, as far as Metalform set it.

A Redfish BMC never shows a password, and trying one with a login counts a failure against
the account (and, on some BMCs, against the address Metalform connects from). So every
password Metalform sets (creating an account, changing its password) is recorded by the
keyed fingerprint of the secret (never the value) in the journal `redfish-accounts` (see
`providers.journal`: the server's state store, else the file `redfish-accounts.jsonl` in
`$XDG_STATE_HOME/metalform` or the one `extra["redfish.accountJournal"]` names). A read then
reports `bmc.accounts.<name>.password`:

- `current`: the password recorded is the one the account's Credential holds now;
- `other`: it was set from another secret (its Credential changed in Git since);
- nothing when no password was recorded for the account (made by hand, or set by a Metalform
  keeping its journal elsewhere): it is not compared.
"""

from __future__ import annotations

import threading
from pathlib import Path

from providers.journal import state_dir
from reconciler.credentials import fingerprint_key
from reconciler.planners.accounts import SECRET_CURRENT, SECRET_OTHER
from reconciler.provider import Journal
from reconciler.secrets import Secret, fingerprint

NAME = "redfish-accounts"
FILE = f"{NAME}.jsonl"


def default_path() -> Path:
    return state_dir() / FILE


class PasswordJournal:
    """Fingerprints of the passwords set, by (BMC base URL, user name)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def _fingerprint(self, secret: Secret) -> str:
        with self._lock:
            if self._key is None:
                self._key = fingerprint_key()  # the installation's, as the plan's
            key = self._key
        return fingerprint(secret, key)

    def record(self, endpoint: str, username: str, secret: Secret) -> None:
        """`username` on `endpoint` now has the password `secret` (just set by Metalform)."""
        self._journal.record(f"{endpoint} {username}", fingerprint=self._fingerprint(secret))

    def state(self, endpoint: str, username: str, secret: Secret) -> str | None:
        """`current`, `other` or None (see the module)."""
        entry = self._journal.get(f"{endpoint} {username}")
        if entry is None:
            return None
        same = entry.get("fingerprint") == self._fingerprint(secret)
        return SECRET_CURRENT if same else SECRET_OTHER
