"""A MAAS deployment an earlier apply started (and died in) is waited for, never started again."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from metalform.lab.maas import LabMachine, MaasPeer, system_id_of
from providers.maas import MaasProvider
from providers.memory import MemoryFleet, memory_factory
from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus
from tests.fixtures.maas import PROVIDER, make_context

pytestmark = [pytest.mark.peer]
HOST = "maas-resume"


def test_a_deploy_in_progress_is_planned_as_a_wait_and_applied_without_a_second_deploy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = MaasPeer(
        tmp_path / "maas", [LabMachine(HOST)], port=0, delay=3.0, die_with_parent=True
    ).start()
    try:
        repo = tmp_path / "repo"
        repo.mkdir()
        (repo / "infra.yaml").write_text(
            textwrap.dedent(f"""\
            apiVersion: metalform/v1
            kind: Credential
            metadata: {{name: maas-key}}
            spec: {{type: token, token: {{fromEnv: RESUME_MAAS_API_KEY}}}}
            ---
            apiVersion: metalform/v1
            kind: Credential
            metadata: {{name: bmc}}
            spec: {{type: basic, username: admin, password: {{fromEnv: RESUME_BMC_PASSWORD}}}}
            ---
            apiVersion: metalform/v1
            kind: Provider
            metadata: {{name: {PROVIDER}}}
            spec: {{type: maas, url: "{peer.url}", credential: maas-key, timeout: 5}}
            ---
            apiVersion: metalform/v1
            kind: Server
            metadata: {{name: {HOST}}}
            spec:
              bmc: {{driver: redfish, address: "http://127.0.0.1:9", credential: bmc}}
              provisioning: {{provider: {PROVIDER}, state: Deployed, distroSeries: noble}}
            """)
        )
        monkeypatch.setenv("RESUME_MAAS_API_KEY", peer.api_key)
        monkeypatch.setenv("RESUME_BMC_PASSWORD", "bmc-secret-for-resume")
        engine = Engine(
            Settings(operation_timeout=15.0, timeout=5.0, retries=1),
            factories={
                "redfish": memory_factory(MemoryFleet({f"Server/{HOST}": {"state": {}}})),
                "maas": MaasProvider,
            },
        )
        assert [a.operation for a in engine.plan(repo).plan.actions] == ["provisioning.deploy"]

        # The apply that asked MAAS to deploy died: MAAS goes on deploying.
        maas = MaasProvider(make_context(peer))
        try:
            maas._client(PROVIDER).deploy(system_id_of(HOST), user_data=None, distro_series="noble")
        finally:
            maas.close()

        plan = engine.plan(repo).plan
        assert [(a.operation, a.reason) for a in plan.actions] == [
            ("provisioning.wait", "the machine is Deploying in MAAS")
        ]
        result = engine.apply(plan)
        assert result.count(ActionStatus.SUCCEEDED) == 1, result
        assert engine.plan(repo).plan.actions == []
    finally:
        peer.stop()
