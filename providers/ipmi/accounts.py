"""BMC users and the login rotation, through IPMI (pyghmi's user commands).

IPMI keeps users in numbered slots (1..max users of the LAN channel; slot 1 is usually the
anonymous user, without a name). What a slot holds: a name (Get/Set User Name), a password
(Set User Password, which also enables and disables the user) and, per channel, a privilege
limit and whether the user may send IPMI messages (Get/Set User Access).

Roles map to privilege limits: Administrator -> administrator, Operator -> operator,
ReadOnly -> user. A slot is enabled when the BMC says so (the IPMI 2.0 "user ID enable
status" of Get User Access); BMCs that leave that status unspecified (OpenIPMI's `ipmi_sim`
among them) disable a user by withdrawing its IPMI messaging, so that bit stands for it.

IPMI LAN settings in pyghmi cover addresses only (no NTP, SSH, HTTP or host name): BMC
network services are not managed through IPMI, and the planner says so for each setting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pyghmi import exceptions as pyghmi_exc

from providers.ipmi.client import BmcTarget, IpmiClient
from reconciler.errors import PermanentError
from reconciler.model import Action
from reconciler.planners.accounts import ACCOUNTS, PASSWORD, SECRET_CURRENT, SECRET_OTHER

T = TypeVar("T")
OPERATIONS = frozenset({"account.create", "account.set", "account.disable", "account.rotate"})
PRIVILEGES = {"Administrator": "administrator", "Operator": "operator", "ReadOnly": "user"}
ROLES = {level: role for role, level in PRIVILEGES.items()}
PRIVILEGE_NAMES = {1: "callback", 2: "user", 3: "operator", 4: "administrator", 5: "proprietary"}
ENABLE_STATUS = {0b01: True, 0b10: False}
"""Get User Access, byte 2 bits 7:6 (IPMI 2.0): 00b unspecified, 01b enabled, 10b disabled."""
IPMI_MESSAGING = 0b0001_0000
MAX_NAME = 16
"""IPMI user names are at most 16 bytes."""
SET_USER_PASSWORD = 0x47
TEST_PASSWORD = 0b11
TEST_FAILED = frozenset({0x80, 0x81})
"""Set User Password's answers to a test: wrong password; wrong size (stored in the other
of the 16- and 20-byte forms, so another password too)."""


@dataclass(frozen=True)
class User:
    uid: int
    name: str
    privilege: str
    """callback, user, operator, administrator, proprietary or no_access."""
    messaging: bool
    enabled: bool

    @property
    def role(self) -> str:
        return ROLES.get(self.privilege, self.privilege)


def parse_access(uid: int, name: str, data: bytes) -> User:
    """A user from its name and the four bytes of Get User Access."""
    if len(data) != 4:
        raise ValueError(f"Get User Access answered {len(data)} bytes, expected 4")
    messaging = bool(data[3] & IPMI_MESSAGING)
    status = ENABLE_STATUS.get(data[1] >> 6)
    return User(
        uid=uid,
        name=name,
        privilege=PRIVILEGE_NAMES.get(data[3] & 0x0F, "no_access"),
        messaging=messaging,
        enabled=messaging if status is None else status,
    )


@dataclass(frozen=True)
class _Bmc:
    """One BMC's session: each request on its own, within the client's timeout (a BMC has up
    to 63 user slots: reading them is a hundred requests)."""

    client: IpmiClient
    target: BmcTarget

    def ask(self, what: str, fn: Callable[[Any], T]) -> T:
        return self.client.call(self.target, what, fn)

    def name(self, uid: int) -> str | None:
        found = self.ask("read a user name", lambda cmd: cmd.get_user_name(uid))
        return str(found) if found else None

    def access(self, channel: int, uid: int) -> bytes:
        return self.ask(
            "read a user's access",
            lambda cmd: bytes(
                cmd.xraw_command(netfn=0x06, command=0x44, data=(channel, uid))["data"]
            ),
        )


def _users(bmc: _Bmc) -> tuple[int, dict[str, User], list[int]]:
    """The LAN channel, its named users by name and its free slots (no name, not slot 1)."""
    channel = int(bmc.ask("read the LAN channel", lambda cmd: cmd.get_network_channel()))
    users: dict[str, User] = {}
    free: list[int] = []
    for uid in range(1, (bmc.access(channel, 1)[0] & 0x3F) + 1):
        name = bmc.name(uid)
        if not name:
            if uid > 1:
                free.append(uid)
            continue
        users[name] = parse_access(uid, name, bmc.access(channel, uid))
    return channel, users, free


def read_users(
    client: IpmiClient, target: BmcTarget, declared: Mapping[str, str]
) -> dict[str, Any]:
    """`bmc.accounts.<name>.role` and `.enabled` of every named user, and `.password` of
    those in `declared` (user name -> the password Git declares), where the BMC can tell."""
    bmc = _Bmc(client, target)
    _, users, _ = _users(bmc)
    state: dict[str, Any] = {}
    for name, user in users.items():
        state[f"{ACCOUNTS}{name}.role"] = user.role
        state[f"{ACCOUNTS}{name}.enabled"] = user.enabled
        if name in declared:
            known = check_password(bmc, user.uid, declared[name])
            if known is not None:
                state[f"{ACCOUNTS}{name}{PASSWORD}"] = known
    return state


def password_request(uid: int, password: str) -> tuple[int, ...] | None:
    """Set User Password's request data to test `password` (None: longer than IPMI allows).
    A password of more than 16 bytes is tested in the 20-byte form, as it is set."""
    raw = password.encode()
    if len(raw) > 20:
        return None
    wide = len(raw) > 16
    return (uid | (0x80 if wide else 0), TEST_PASSWORD, *raw.ljust(20 if wide else 16, b"\0"))


def check_password(bmc: _Bmc, uid: int, password: str) -> str | None:
    """`current` when the user's password is `password`, `other` when not, None when the BMC
    cannot say. Unlike a login, a test counts no failure against the user."""
    data = password_request(uid, password)
    if data is None:
        return None

    def test(cmd: Any) -> str | None:
        try:
            cmd.xraw_command(netfn=0x06, command=SET_USER_PASSWORD, data=data)
        except pyghmi_exc.IpmiException as exc:
            return SECRET_OTHER if exc.ipmicode in TEST_FAILED else None
        return SECRET_CURRENT

    return bmc.ask(f"test the password of user {uid}", test)


def execute(
    action: Action, client: IpmiClient, target: BmcTarget, secret_of: Callable[[str], str]
) -> None:
    """Perform an account action on the BMC, logged in as `target`.

    `secret_of(username)` gives the password Git declares for an account (its Credential's).
    """
    params = action.params
    username = str(params.get("username", ""))
    operation = action.operation
    bmc = _Bmc(client, target)
    channel, users, free = _users(bmc)
    if operation == "account.create":
        _create(bmc, channel, users, free, params, secret_of(username))
        return
    user = users.get(username)
    if user is None:
        raise PermanentError(f"{target.endpoint}: no BMC user {username!r}")
    if operation == "account.set":
        _set(bmc, channel, user, params, secret_of)
        if "credential" in params:  # its Credential changed since the password was set
            password = secret_of(username)
            bmc.ask(
                f"set the password of {username}",
                lambda cmd: cmd.set_user_password(user.uid, password=password),
            )
    elif operation == "account.disable":
        _enable(bmc, user.uid, False, "")
    else:  # account.rotate: the login's password, set through the session of the old one
        password = secret_of(username)
        bmc.ask(
            f"set the password of {username}",
            lambda cmd: cmd.set_user_password(user.uid, password=password),
        )


def _create(
    bmc: _Bmc,
    channel: int,
    users: dict[str, User],
    free: list[int],
    params: dict[str, Any],
    password: str,
) -> None:
    name = str(params["username"])
    if len(name.encode()) > MAX_NAME:
        raise PermanentError(f"IPMI user names have at most {MAX_NAME} bytes: {name!r}")
    if name in users:
        raise PermanentError(f"BMC user {name!r} exists already (slot {users[name].uid})")
    if not free:
        raise PermanentError(f"no free IPMI user slot for {name!r}")
    uid = free[0]
    enabled = bool(params.get("enabled", True))
    privilege = PRIVILEGES[params["role"]]
    bmc.ask(f"name user {uid}", lambda cmd: cmd.set_user_name(uid, name))
    bmc.ask(
        f"set the password of {name}", lambda cmd: cmd.set_user_password(uid, password=password)
    )
    bmc.ask(
        f"set the access of {name}",
        lambda cmd: cmd.set_user_access(
            uid, channel, link_auth=False, ipmi_msg=enabled, privilege_level=privilege
        ),
    )
    _enable(bmc, uid, enabled, password)


def _enable(bmc: _Bmc, uid: int, enabled: bool, password: str) -> None:
    """Enable or disable a user. Enabling sends the password along (as pyghmi's create_user
    does): some BMCs (`ipmi_sim`) take the password field of any Set User Password request,
    and one without it would leave the user with an empty password."""
    if enabled:
        bmc.ask(
            f"enable user {uid}",
            lambda cmd: cmd.set_user_password(uid, mode="enable", password=password),
        )
    else:
        bmc.ask(f"disable user {uid}", lambda cmd: cmd.set_user_password(uid, mode="disable"))


def _set(
    bmc: _Bmc, channel: int, user: User, params: dict[str, Any], secret_of: Callable[[str], str]
) -> None:
    enabled = bool(params.get("enabled", user.enabled))
    if "role" in params or enabled != user.messaging:
        # Access is set as a whole: keep messaging in step with the enabled state.
        privilege = PRIVILEGES[params["role"]] if "role" in params else user.privilege
        bmc.ask(
            f"set the access of {user.name}",
            lambda cmd: cmd.set_user_access(
                user.uid, channel, link_auth=False, ipmi_msg=enabled, privilege_level=privilege
            ),
        )
    if "enabled" in params:
        _enable(bmc, user.uid, enabled, secret_of(user.name) if enabled else "")
