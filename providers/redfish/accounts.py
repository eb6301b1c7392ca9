"""BMC accounts, network services and the login rotation, through Redfish.

sushy has no resource for the AccountService, so these use sushy's connector with raw JSON:
`AccountService/Accounts` (ManagerAccount: UserName, RoleId, Enabled, Password) and the
Manager's `NetworkProtocol` (NTP, IPMI, SSH, HTTPS, HostName). Paths and operations: see
`reconciler.planners.accounts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.redfish.client import ROOT_PREFIX, BmcConnection
from providers.redfish.passwords import PasswordJournal
from reconciler.errors import MetalformError, PermanentError
from reconciler.model import Action, Resource, is_of
from reconciler.model.hardware import ServerSpec
from reconciler.planners.accounts import (
    ACCOUNTS,
    LOGIN,
    PASSWORD,
    effective_blocks,
    login_username,
)
from reconciler.planners.bmc_network import NETWORK
from reconciler.provider import ProviderContext

OPERATIONS = frozenset(
    {"account.create", "account.set", "account.disable", "account.rotate", "network.set"}
)
PROTOCOL_KEYS = {"ipmi": "IPMI", "ssh": "SSH", "http": "HTTPS"}


def _accounts_path(conn: BmcConnection) -> str:
    service = conn.root.json.get("AccountService", {}).get("@odata.id")
    service = service or f"{ROOT_PREFIX}AccountService"
    found = conn.get_json(service).get("Accounts", {}).get("@odata.id")
    return str(found or f"{service.rstrip('/')}/Accounts")


def _members(conn: BmcConnection) -> dict[str, tuple[str, dict[str, Any]]]:
    """UserName -> (path, ManagerAccount JSON); empty slots (no UserName) left out."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for member in conn.get_json(_accounts_path(conn)).get("Members", []):
        path = member.get("@odata.id")
        if not path:
            continue
        doc = conn.get_json(path)
        if doc.get("UserName"):
            found[str(doc["UserName"])] = (path, doc)
    return found


def _network_path(system: Mapping[str, Any]) -> str | None:
    """The NetworkProtocol of the system's first Manager (`system` is its JSON)."""
    managers = system.get("Links", {}).get("ManagedBy", [])
    if not managers or not managers[0].get("@odata.id"):
        return None
    return f"{managers[0]['@odata.id'].rstrip('/')}/NetworkProtocol"


def read_bmc(
    resource: Resource,
    conn: BmcConnection,
    system: Mapping[str, Any],
    ctx: ProviderContext,
    passwords: PasswordJournal,
) -> dict[str, Any]:
    """The login in use and, when Git declares them, the accounts (with what is known of
    their passwords, see `passwords`) and network services."""
    state: dict[str, Any] = {LOGIN: conn.login}
    if not is_of(resource, ServerSpec):
        return state
    blocks = effective_blocks(resource, ctx.resources)
    if blocks.accounts is not None:
        members = _members(conn)
        for username, (_, doc) in members.items():
            state[f"{ACCOUNTS}{username}.role"] = doc.get("RoleId")
            state[f"{ACCOUNTS}{username}.enabled"] = bool(doc.get("Enabled", True))
        login = login_username(resource, ctx.resources)
        for account in blocks.accounts:
            if account.username in members and account.username != login:
                known = _password_state(conn, account.username, account.credential, ctx, passwords)
                if known is not None:
                    state[f"{ACCOUNTS}{account.username}{PASSWORD}"] = known
    if blocks.network is not None:
        path = _network_path(system)
        if path is not None:
            state.update(_network_state(conn.get_json(path)))
    return state


def _password_state(
    conn: BmcConnection,
    username: str,
    credential: str,
    ctx: ProviderContext,
    passwords: PasswordJournal,
) -> str | None:
    try:
        secret = ctx.credential(credential).secret
    except MetalformError:
        return None  # the plan's credential check names what is missing
    return passwords.state(conn.key.base_url, username, secret)


def _network_state(doc: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = {}
    ntp = doc.get("NTP")
    if isinstance(ntp, dict):
        state[NETWORK + "ntpServers"] = [s for s in ntp.get("NTPServers", []) if s]
    for name, key in PROTOCOL_KEYS.items():
        block = doc.get(key)
        if isinstance(block, dict) and "ProtocolEnabled" in block:
            state[f"{NETWORK}protocols.{name}"] = bool(block["ProtocolEnabled"])
    if "HostName" in doc:
        state[NETWORK + "hostname"] = doc.get("HostName")
    return state


def execute(
    action: Action,
    conn: BmcConnection,
    system: Any,
    ctx: ProviderContext,
    passwords: PasswordJournal,
) -> bool:
    """Perform an account or network action; True when the connection must be re-opened
    (the login's password changed). Every password set is recorded in `passwords`."""
    params = action.params
    operation = action.operation
    if operation == "network.set":
        path = _network_path(system.json)
        if path is None:
            raise PermanentError(f"{conn.endpoint}: the system names no Manager (NetworkProtocol)")
        conn.connector.patch(path, data=_network_patch(params))
        return False
    username = str(params.get("username", ""))
    members = _members(conn)
    if operation == "account.create":
        secret = ctx.credential(str(params["credential"])).secret
        body = {
            "UserName": username,
            "Password": secret.reveal(),
            "RoleId": params["role"],
            "Enabled": bool(params.get("enabled", True)),
        }
        conn.connector.post(_accounts_path(conn), data=body)
        passwords.record(conn.key.base_url, username, secret)
        return False
    if username not in members:
        raise PermanentError(f"{conn.endpoint}: no BMC account {username!r}")
    path = members[username][0]
    if operation == "account.set":
        _set(conn, path, username, params, ctx, passwords)
        return False
    if operation == "account.disable":
        conn.connector.patch(path, data={"Enabled": False})
        return False
    # account.rotate: a BMC already on the new secret (another action did it) is done.
    if conn.login == "current":
        return False
    new = ctx.credential(str(params["credential"])).secret.reveal()
    conn.connector.patch(path, data={"Password": new})
    return True


def _set(
    conn: BmcConnection,
    path: str,
    username: str,
    params: dict[str, Any],
    ctx: ProviderContext,
    passwords: PasswordJournal,
) -> None:
    """Role, enabled and, when `credential` is given (the account's Credential changed since
    Metalform set its password), the password: one PATCH."""
    patch: dict[str, Any] = {"RoleId": params["role"]} if "role" in params else {}
    if "enabled" in params:
        patch["Enabled"] = bool(params["enabled"])
    secret = ctx.credential(str(params["credential"])).secret if "credential" in params else None
    if secret is not None:
        patch["Password"] = secret.reveal()
    conn.connector.patch(path, data=patch)
    if secret is not None:
        passwords.record(conn.key.base_url, username, secret)


def _network_patch(params: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if "ntpServers" in params:
        body["NTP"] = {"NTPServers": list(params["ntpServers"]), "ProtocolEnabled": True}
    for name, enabled in (params.get("protocols") or {}).items():
        body[PROTOCOL_KEYS[name]] = {"ProtocolEnabled": bool(enabled)}
    if "hostname" in params:
        body["HostName"] = params["hostname"]
    return body
