"""BMC users and the login rotation through IPMI, against `ipmi_sim` BMCs of their own."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command

from metalform.lab.ipmi import BmcSpec, IpmiPeer, LabUser
from providers.ipmi import IpmiProvider
from providers.ipmi.accounts import check_password, parse_access
from reconciler.errors import AuthenticationError
from reconciler.model import Action, Metadata, Resource
from reconciler.model.bmc import AccountRole, BmcAccount
from reconciler.model.hardware import Bmc, BmcDriver, ServerSpec
from reconciler.secrets import ResolvedCredential, Secret
from tests.fixtures.ipmi import IPMI_PASSWORD, IPMI_USERNAME, ipmi_context, ipmi_server

NEW_PASSWORD = "ipmi-rotated-884"
# At most 16 characters: ipmi_sim ignores the 20-byte form of Set User Password.
MONITOR_PASSWORD = "ipmi-monitor-552"
BMCS = ("acc-a", "acc-b")
LEGACY = LabUser(name="legacy", password="legacy-pw-4410", privilege="operator")


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[IpmiPeer]:
    """BMCs of their own: these tests change users and passwords."""
    lab = IpmiPeer(
        tmp_path,
        # acc-a has an account nobody declared, as a BMC set up by hand would
        [BmcSpec(name="acc-a", users=(LEGACY,)), BmcSpec(name="acc-b")],
        username=IPMI_USERNAME,
        password=IPMI_PASSWORD,
    )
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def provider_with(secret: str, previous: str | None) -> IpmiProvider:
    def resolve(name: str) -> ResolvedCredential:
        if name == "monitor":
            return ResolvedCredential(name, "monitor", Secret(MONITOR_PASSWORD))
        return ResolvedCredential(
            name, IPMI_USERNAME, Secret(secret), Secret(previous) if previous else None
        )

    return IpmiProvider(dataclasses.replace(ipmi_context(), credential=resolve))


def acc_a(peer: IpmiPeer, account: BmcAccount) -> Resource:
    """The Server of BMC acc-a, declaring `account`."""
    bmc = Bmc(
        driver=BmcDriver.IPMI, address=peer.addresses["acc-a"], credential="bmc", accounts=[account]
    )
    return Resource(kind="Server", metadata=Metadata(name="acc-a"), spec=ServerSpec(bmc=bmc))


def act(resource: Resource, operation: str, **params: Any) -> Action:
    return Action(id=1, address=resource.address, operation=operation, params=params)


def logs_in(
    peer: IpmiPeer, name: str, username: str, password: str, privilege: int = 4, again: bool = False
) -> bool:
    """Whether the BMC lets the user in. Without a BMC key, the password (bytes or str) is the
    key; each form is a pyghmi session of its own: not the provider's (which uses none), and
    with `again` not the one an earlier check of the same user left cached."""
    try:
        cmd = ipmi_command.Command(
            bmc="127.0.0.1",
            userid=username,
            password=password,
            port=peer.port(name),
            privlevel=privilege,
            kg=password if again else password.encode(),
        )
        cmd.get_power()
    except Exception:
        return False
    # Log out: a session left open shares pyghmi's sockets with the provider's.
    cmd.ipmi_session.logout()
    return True


def test_get_user_access_enable_status_wins_over_messaging() -> None:
    # IPMI 2.0 status 10b (disabled) although messaging is on; 00b falls back to messaging.
    assert parse_access(3, "x", bytes([0x10, 0b1000_0001, 0, 0x14])).enabled is False
    assert parse_access(3, "x", bytes([0x10, 0b0100_0001, 0, 0x04])).enabled is True
    assert parse_access(3, "x", bytes([0x10, 1, 0, 0x14])).role == "Administrator"
    assert parse_access(3, "x", bytes([0x10, 1, 0, 0x02])).enabled is False


class _Answers:
    """A BMC session for `check_password`: answers every command with `code` (0: success)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.sent: list[tuple[int, ...]] = []

    def xraw_command(self, netfn: int, command: int, data: tuple[int, ...]) -> dict[str, Any]:
        self.sent.append((netfn, command, *data))
        if self.code:
            raise pyghmi_exc.IpmiException("refused", code=self.code)
        return {"data": b""}

    def ask(self, what: str, fn: Any) -> Any:
        return fn(self)


def test_a_password_test_tells_current_other_and_unknown() -> None:
    assert check_password(_Answers(0), 5, "sixteen-chars-ok") == "current"  # type: ignore[arg-type]
    assert check_password(_Answers(0x80), 5, "x") == "other"  # type: ignore[arg-type]
    assert check_password(_Answers(0x81), 5, "x") == "other"  # type: ignore[arg-type]
    assert check_password(_Answers(0xC1), 5, "x") is None  # type: ignore[arg-type]
    assert check_password(_Answers(0), 5, "x" * 21) is None  # type: ignore[arg-type]
    short, wide = _Answers(0), _Answers(0)
    check_password(short, 5, "pw")  # type: ignore[arg-type]
    check_password(wide, 5, "p" * 17)  # type: ignore[arg-type]
    assert short.sent == [(0x06, 0x47, 5, 0b11, *b"pw".ljust(16, b"\0"))]
    assert wide.sent == [(0x06, 0x47, 0x85, 0b11, *(b"p" * 17).ljust(20, b"\0"))]


@pytest.mark.peer
def test_an_accounts_password_is_set_from_its_credential(peer: IpmiPeer) -> None:
    # `legacy` was made by hand; Git now declares it with the monitor Credential's secret.
    legacy = BmcAccount(username="legacy", role=AccountRole.OPERATOR, credential="monitor")
    resource = acc_a(peer, legacy)
    provider = provider_with(IPMI_PASSWORD, previous=None)
    try:
        changed = provider.execute(
            act(resource, "account.set", username="legacy", credential="monitor"), resource
        ).state
    finally:
        provider.close()
    assert changed["bmc.accounts.legacy.role"] == "Operator"
    assert logs_in(peer, "acc-a", "legacy", MONITOR_PASSWORD, privilege=3)
    assert not logs_in(peer, "acc-a", "legacy", LEGACY.password, privilege=3, again=True)


@pytest.mark.peer
def test_users_created_changed_and_disabled(peer: IpmiPeer) -> None:
    monitor = BmcAccount(username="monitor", role=AccountRole.READ_ONLY, credential="monitor")
    resource = acc_a(peer, monitor)
    provider = provider_with(IPMI_PASSWORD, previous=None)
    try:
        before = provider.read_one(resource).state
        assert before["bmc.login"] == "current"
        assert before["bmc.accounts.metalform.role"] == "Administrator"
        assert "bmc.accounts.monitor.role" not in before
        assert before["bmc.accounts.legacy.role"] == "Operator"
        assert before["bmc.accounts.legacy.enabled"] is True

        created = provider.execute(
            act(
                resource,
                "account.create",
                username="monitor",
                role="ReadOnly",
                enabled=True,
                credential="monitor",
            ),
            resource,
        ).state
        assert created["bmc.accounts.monitor.role"] == "ReadOnly"
        assert created["bmc.accounts.monitor.enabled"] is True
        # tested with Set User Password's test operation (ipmi_sim answers every test with
        # success: the answers of a BMC that compares are in the test below)
        assert created["bmc.accounts.monitor.password"] == "current"
        assert "bmc.accounts.legacy.password" not in created  # not declared: not tested
        assert logs_in(peer, "acc-a", "monitor", MONITOR_PASSWORD, privilege=2)

        changed = provider.execute(
            act(resource, "account.set", username="monitor", role="Operator"), resource
        ).state
        assert changed["bmc.accounts.monitor.role"] == "Operator"
        assert changed["bmc.accounts.monitor.enabled"] is True

        disabled = provider.execute(
            act(resource, "account.disable", username="monitor"), resource
        ).state
        assert disabled["bmc.accounts.monitor.enabled"] is False
        assert disabled["bmc.accounts.monitor.role"] == "Operator"
        assert disabled["bmc.accounts.metalform.enabled"] is True
        pruned = provider.execute(act(resource, "account.disable", username="legacy"), resource)
        assert pruned.state["bmc.accounts.legacy.enabled"] is False
    finally:
        provider.close()
    assert not logs_in(peer, "acc-a", "legacy", LEGACY.password, privilege=3)
    provider = provider_with(IPMI_PASSWORD, previous=None)
    try:
        # Enabled again (Git lists it once more): the password Git declares works.
        back = provider.execute(
            act(resource, "account.set", username="monitor", enabled=True), resource
        )
        assert back.state["bmc.accounts.monitor.enabled"] is True
        assert logs_in(peer, "acc-a", "monitor", MONITOR_PASSWORD, privilege=3, again=True)
    finally:
        provider.close()


@pytest.mark.peer
def test_rotation_sets_the_new_secret_and_logs_in_with_it(peer: IpmiPeer) -> None:
    servers = [ipmi_server(name, peer.addresses[name], credential="bmc") for name in BMCS]
    rotating = provider_with(NEW_PASSWORD, previous=IPMI_PASSWORD)
    try:
        before = rotating.read(servers)
        assert {live.state["bmc.login"] for live in before.values()} == {"previous"}
        first = rotating.execute(
            act(servers[0], "account.rotate", credential="bmc", username=IPMI_USERNAME),
            servers[0],
        )
        assert first.state["bmc.login"] == "current"
        # Halfway: one BMC on each secret, both reachable, the read says which.
        halfway = rotating.read(servers)
        assert [halfway[s.address].state["bmc.login"] for s in servers] == [
            "current",
            "previous",
        ]
        rotating.execute(
            act(servers[1], "account.rotate", credential="bmc", username=IPMI_USERNAME),
            servers[1],
        )
        again = rotating.execute(  # already rotated: nothing to do, still done
            act(servers[0], "account.rotate", credential="bmc", username=IPMI_USERNAME),
            servers[0],
        )
        assert again.state["bmc.login"] == "current"
    finally:
        rotating.close()
    for name in BMCS:
        assert logs_in(peer, name, IPMI_USERNAME, NEW_PASSWORD)
        assert not logs_in(peer, name, IPMI_USERNAME, IPMI_PASSWORD)


@pytest.mark.peer
def test_neither_secret_works_names_both_and_no_value(peer: IpmiPeer) -> None:
    resource = ipmi_server("acc-b", peer.addresses["acc-b"], credential="bmc")
    wrong = provider_with("ipmi-wrong-new-1", previous="ipmi-wrong-old-2")
    try:
        live = wrong.read([resource])[resource.address]
    finally:
        wrong.close()
    assert live.error is not None
    assert "refused both the secret and the previous secret of Credential/bmc" in live.error
    assert "ipmi-wrong" not in live.error
    again = provider_with("ipmi-wrong-new-1", "ipmi-wrong-old-2")
    try:
        with pytest.raises(AuthenticationError, match="previous secret of Credential/bmc"):
            again.read_one(resource)
    finally:
        again.close()
