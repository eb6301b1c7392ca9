"""The lab BMC's Redfish AccountService: local accounts over the emulator's htpasswd file.

The emulator authenticates every request against its htpasswd file (bcrypt digests), so an
account's password lives there and its role and enabled flag in a JSON file next to it; a
disabled account has no htpasswd line, so it cannot log in. Imported by the emulator only.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import bcrypt
import flask
from sushy_tools import error

ROOT = "/redfish/v1/AccountService"
ROLES = ("Administrator", "Operator", "ReadOnly")


def _respond(body: object, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body), status=status, content_type="application/json")


class LabAccounts:
    """Accounts of the lab BMC, kept in `<htpasswd>` and `<htpasswd>.accounts.json`."""

    def __init__(self, auth_file: Path) -> None:
        self.auth_file = auth_file
        self.meta_file = auth_file.with_name(auth_file.name + ".accounts.json")
        self._lock = threading.Lock()

    def install(self, app: Any) -> None:
        app.add_url_rule(ROOT, "lab_account_service", self.service)
        app.add_url_rule(
            f"{ROOT}/Accounts", "lab_accounts", self.collection, methods=["GET", "POST"]
        )
        app.add_url_rule(
            f"{ROOT}/Accounts/<username>", "lab_account", self.account, methods=["GET", "PATCH"]
        )

    # -- state ------------------------------------------------------------------------------

    def _digests(self) -> dict[str, str]:
        lines = self.auth_file.read_text(encoding="utf-8").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def _meta(self) -> dict[str, dict[str, Any]]:
        meta: dict[str, dict[str, Any]] = {}
        if self.meta_file.exists():
            meta = json.loads(self.meta_file.read_text(encoding="utf-8"))
        for username in self._digests():
            meta.setdefault(username, {"RoleId": "Administrator", "Enabled": True})
        return meta

    def _save(self, meta: dict[str, dict[str, Any]], digests: dict[str, str]) -> None:
        self.meta_file.write_text(json.dumps(meta), encoding="utf-8")
        live = {u: d for u, d in digests.items() if meta.get(u, {}).get("Enabled", True)}
        text = "".join(f"{u}:{d}\n" for u, d in live.items())
        self.auth_file.write_text(text, encoding="utf-8")

    def _document(self, username: str, entry: dict[str, Any]) -> dict[str, Any]:
        return {
            "@odata.type": "#ManagerAccount.v1_8_0.ManagerAccount",
            "@odata.id": f"{ROOT}/Accounts/{username}",
            "Id": username,
            "UserName": username,
            "RoleId": entry["RoleId"],
            "Enabled": entry["Enabled"],
            "Password": None,
        }

    # -- routes -----------------------------------------------------------------------------

    def service(self) -> flask.Response:
        return _respond(
            {
                "@odata.type": "#AccountService.v1_11_0.AccountService",
                "@odata.id": ROOT,
                "Id": "AccountService",
                "Accounts": {"@odata.id": f"{ROOT}/Accounts"},
            }
        )

    def collection(self) -> flask.Response:
        if flask.request.method == "POST":
            return self._create(flask.request.get_json(silent=True))
        with self._lock:
            meta = self._meta()
        return _respond(
            {
                "@odata.id": f"{ROOT}/Accounts",
                "Members": [{"@odata.id": f"{ROOT}/Accounts/{u}"} for u in sorted(meta)],
                "Members@odata.count": len(meta),
            }
        )

    def account(self, username: str) -> flask.Response:
        with self._lock:
            meta = self._meta()
            if username not in meta:
                raise error.NotFound(f"no account {username}")
            if flask.request.method == "GET":
                return _respond(self._document(username, meta[username]))
            body = flask.request.get_json(silent=True)
            if not isinstance(body, dict):
                raise error.BadRequest("PATCH of an account needs a JSON object")
            digests = self._digests()
            self._apply(username, body, meta, digests)
            self._save(meta, digests)
            return flask.Response(status=204)

    def _create(self, body: Any) -> flask.Response:
        if not isinstance(body, dict) or not body.get("UserName") or not body.get("Password"):
            raise error.BadRequest("an account needs UserName and Password")
        username = str(body["UserName"])
        with self._lock:
            meta = self._meta()
            if username in meta:
                raise error.BadRequest(f"account {username} exists")
            meta[username] = {"RoleId": "ReadOnly", "Enabled": True}
            digests = self._digests()
            self._apply(username, body, meta, digests)
            self._save(meta, digests)
            return _respond(self._document(username, meta[username]), status=201)

    def _apply(
        self,
        username: str,
        body: dict[str, Any],
        meta: dict[str, dict[str, Any]],
        digests: dict[str, str],
    ) -> None:
        if "RoleId" in body:
            if body["RoleId"] not in ROLES:
                raise error.BadRequest(f"unknown RoleId (known: {', '.join(ROLES)})")
            meta[username]["RoleId"] = body["RoleId"]
        if "Enabled" in body:
            meta[username]["Enabled"] = bool(body["Enabled"])
        if "Password" in body:
            password = str(body["Password"]).encode()
            digests[username] = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
        else:
            digests.setdefault(username, meta[username].get("Digest", ""))
        if not meta[username]["Enabled"] and username in digests:
            # Kept aside, so that enabling it again restores its password.
            meta[username]["Digest"] = digests[username]
        elif "Digest" in meta[username]:
            digests[username] = digests[username] or meta[username].pop("Digest")
            meta[username].pop("Digest", None)
