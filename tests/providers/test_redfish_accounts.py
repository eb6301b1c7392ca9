"""BMC accounts and the login rotation through Redfish, against the lab BMC's AccountService."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from metalform.lab.redfish import LabSystem, RedfishPeer
from providers.redfish import RedfishProvider
from reconciler.errors import AuthenticationError
from reconciler.model import Action, Metadata, Resource
from reconciler.model.bmc import AccountRole, BmcAccount
from reconciler.model.hardware import Bmc, BmcDriver, ServerSpec
from reconciler.secrets import ResolvedCredential, Secret
from tests.fixtures.redfish import LAB_PASSWORD, LAB_USERNAME, make_context, start_peer

NEW_PASSWORD = "rotated-Pa55word-never-logged"
MONITOR_PASSWORD = "monitor-Pa55word-never-logged"
SYSTEMS = ["acc-1", "acc-2", "acc-3"]


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[RedfishPeer]:
    """A lab BMC of its own: these tests change its passwords."""
    lab = start_peer(tmp_path, [LabSystem(s, power_state="On") for s in SYSTEMS])
    try:
        yield lab
    finally:
        lab.stop()


def provider_with(secret: str, previous: str | None) -> RedfishProvider:
    def resolve(name: str) -> ResolvedCredential:
        if name == "monitor":
            return ResolvedCredential(name, "monitor", Secret(MONITOR_PASSWORD))
        return ResolvedCredential(
            name, LAB_USERNAME, Secret(secret), Secret(previous) if previous else None
        )

    return RedfishProvider(dataclasses.replace(make_context(), credential=resolve))


def server(url: str, system: str, **bmc: Any) -> Resource:
    spec = ServerSpec(
        bmc=Bmc(driver=BmcDriver.REDFISH, address=url, credential="bmc", system_id=system, **bmc)
    )
    return Resource(kind="Server", metadata=Metadata(name=system), spec=spec)


def act(resource: Resource, operation: str, **params: Any) -> Action:
    return Action(id=1, address=resource.address, operation=operation, params=params)


@pytest.mark.peer
def test_rotation_across_servers_converges(peer: RedfishPeer) -> None:
    servers = [server(peer.url, s) for s in SYSTEMS]
    rotating = provider_with(NEW_PASSWORD, previous=LAB_PASSWORD)
    try:
        before = rotating.read(servers)
        assert {live.state["bmc.login"] for live in before.values()} == {"previous"}
        for resource in servers:  # the second and third find the BMC already rotated
            after = rotating.execute(
                act(resource, "account.rotate", credential="bmc", username=LAB_USERNAME),
                resource,
            )
            assert after.state["bmc.login"] == "current"
    finally:
        rotating.close()
    # Only the new secret works now: the previous one is refused.
    old = provider_with(LAB_PASSWORD, previous=None)
    try:
        with pytest.raises(AuthenticationError):
            old.read_one(servers[0])
    finally:
        old.close()


@pytest.mark.peer
def test_neither_secret_works_names_both(peer: RedfishPeer) -> None:
    resource = server(peer.url, SYSTEMS[0])
    lost = provider_with("not-it-1-Pa55word", previous="not-it-2-Pa55word")
    try:
        live = lost.read([resource])[resource.address]
    finally:
        lost.close()
    assert not live.reachable
    assert live.error is not None
    assert "refused both the secret and the previous secret of Credential/bmc" in live.error
    assert "not-it" not in live.error


@pytest.mark.peer
def test_accounts_create_change_and_disable(peer: RedfishPeer) -> None:
    monitor = BmcAccount(username="monitor", role=AccountRole.READ_ONLY, credential="monitor")
    resource = server(peer.url, SYSTEMS[1], accounts=[monitor])
    provider = provider_with(LAB_PASSWORD, previous=None)
    try:
        live = provider.read_one(resource)
        assert "bmc.accounts.monitor.role" not in live.state
        assert live.state[f"bmc.accounts.{LAB_USERNAME}.role"] == "Administrator"
        create = act(
            resource,
            "account.create",
            username="monitor",
            role="ReadOnly",
            enabled=True,
            credential="monitor",
        )
        live = provider.execute(create, resource)
        assert live.state["bmc.accounts.monitor.role"] == "ReadOnly"
        assert live.state["bmc.accounts.monitor.enabled"] is True
        live = provider.execute(
            act(resource, "account.set", username="monitor", role="Operator"), resource
        )
        assert live.state["bmc.accounts.monitor.role"] == "Operator"
        live = provider.execute(act(resource, "account.disable", username="monitor"), resource)
        assert live.state["bmc.accounts.monitor.enabled"] is False
    finally:
        provider.close()


@pytest.mark.peer
def test_concurrent_rotations_of_servers_behind_one_bmc_all_succeed(peer: RedfishPeer) -> None:
    # The Servers share the BMC's accounts: the first rotation changes the password under
    # the others, which must find it done, not be refused with the previous secret.
    servers = [server(peer.url, s) for s in SYSTEMS]
    rotating = provider_with(NEW_PASSWORD, previous=LAB_PASSWORD)
    try:
        assert {live.state["bmc.login"] for live in rotating.read(servers).values()} == {"previous"}
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            done = list(
                pool.map(
                    lambda r: rotating.execute(
                        act(r, "account.rotate", credential="bmc", username=LAB_USERNAME), r
                    ),
                    servers,
                )
            )
        assert [live.state["bmc.login"] for live in done] == ["current"] * len(servers)
    finally:
        rotating.close()
