"""The MAAS simulator (driven by the real python-libmaas), the maas provider, and an end-to-end
plan -> apply -> converged run through the engine."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from metalform.lab.maas import MaasPeer, system_id_of
from providers.maas import MaasProvider, mapping
from providers.maas.client import ApiKey, MaasClient
from providers.memory import MemoryFleet, memory_factory
from reconciler.concurrency import Limiter
from reconciler.engine import Engine, Settings
from reconciler.errors import PermanentError, UnreachableError
from reconciler.model import Action, ActionStatus, Health
from reconciler.model.hardware import ProvisioningState
from reconciler.provider import Provider
from reconciler.render import render_text
from reconciler.userdata import digest_of
from tests.fixtures.maas import WRONG_KEY, maas_server, make_context

CLOUD_CONFIG = "#cloud-config\npackages: [nvidia-driver-550]\n"


@pytest.fixture
def provider(maas_peer: MaasPeer) -> Iterator[MaasProvider]:
    p = MaasProvider(make_context(maas_peer))
    try:
        yield p
    finally:
        p.close()


def action(operation: str, address: str, **params: Any) -> Action:
    return Action(id=1, address=address, operation=operation, params=params, provider="maas")


# --- the simulator, through python-libmaas ------------------------------------------------------


def test_simulator_lifecycle_with_python_libmaas(maas_peer: MaasPeer) -> None:
    from maas.client import connect

    client = connect(maas_peer.url, apikey=maas_peer.api_key)
    machines = {m.hostname: m for m in client.machines.list()}
    assert machines["maas-read"].status_name == "Ready"
    machine = machines["maas-libmaas"]
    machine.deploy(
        user_data=CLOUD_CONFIG.encode(), distro_series="noble", wait=True, wait_interval=0.05
    )
    assert machine.status_name == "Deployed"
    assert machine.distro_series == "noble"
    stored = maas_peer.machines_state()["maas-libmaas"]
    assert stored["user_data"] == CLOUD_CONFIG
    assert machine.query_power_state().value == "on"
    machine.release(wait=True, wait_interval=0.05)
    assert machine.status_name == "Ready"
    assert maas_peer.machines_state()["maas-libmaas"]["user_data"] is None
    machine.commission(wait=True, wait_interval=0.05)
    assert machine.status_name == "Ready"
    tag = client.tags.create("libmaas-tag")
    assert tag.name == "libmaas-tag"
    assert "libmaas-tag" in {t.name for t in client.tags.list()}


def test_simulator_refuses_a_bad_key(maas_peer: MaasPeer) -> None:
    from maas.client import connect
    from maas.client.bones import CallError

    client = connect(maas_peer.url, apikey=WRONG_KEY)
    with pytest.raises(CallError) as caught:
        client.machines.list()
    assert caught.value.status == 401


def test_simulator_keeps_its_machines_across_a_restart(tmp_path: Path) -> None:
    from metalform.lab.maas import LabMachine
    from tests.fixtures.maas import start_peer

    peer = start_peer(tmp_path, [LabMachine("keep-me", status="New")])
    try:
        peer.set_status("keep-me", "Deployed")
        peer.stop()
        peer.start()
        assert peer.machines_state()["keep-me"]["status"] == 6
        again = MaasPeer.attach(tmp_path)
        assert again.is_running() and again.url == peer.url
    finally:
        peer.stop()


# --- the provider ---------------------------------------------------------------------------------


def test_provider_satisfies_the_protocol(provider: MaasProvider) -> None:
    assert isinstance(provider, Provider)
    assert provider.endpoint(maas_server("maas-read")).startswith("maas:http://127.0.0.1:")


def test_read_maps_machines_by_hostname_in_one_request(
    maas_peer: MaasPeer, provider: MaasProvider
) -> None:
    provider.read([maas_server("maas-read")])  # libmaas reads the API description once
    maas_peer.requests_seen(clear=True)
    servers = [maas_server("maas-read"), maas_server("maas-new"), maas_server("nowhere")]
    live = provider.read(servers)
    assert maas_peer.requests_seen() == ["GET machines/"]
    read = live["Server/maas-read"]
    assert read.state[mapping.STATE] == "Ready"
    assert read.state[mapping.TAGS] == ["gpu"]
    assert read.facts[mapping.SYSTEM_ID]
    assert read.health is Health.HEALTHY
    assert live["Server/maas-new"].state[mapping.STATE] == "New"
    assert "no machine with hostname 'nowhere'" in live["Server/nowhere"].facts[mapping.MISSING]


def test_bad_api_key_is_a_clear_error_without_the_key(maas_peer: MaasPeer) -> None:
    provider = MaasProvider(make_context(maas_peer))
    try:
        live = provider.read([maas_server("maas-read", provider="maas-wrong")])
    finally:
        provider.close()
    result = live["Server/maas-read"]
    assert result.health is Health.UNREACHABLE
    assert result.error is not None
    assert "refused the credentials of Credential/maas-wrong-key" in result.error
    assert WRONG_KEY not in result.error and "wrong-secret" not in result.error


def test_unreachable_maas_marks_its_servers_unreachable(provider: MaasProvider) -> None:
    live = provider.read([maas_server("maas-read", provider="maas-down")])
    assert live["Server/maas-read"].health is Health.UNREACHABLE
    assert live["Server/maas-read"].error == (
        "http://127.0.0.1:9/MAAS did not answer: connection refused"
    )


def test_a_temporary_http_error_is_retried(maas_peer: MaasPeer, provider: MaasProvider) -> None:
    provider.read([maas_server("maas-read")])
    maas_peer.requests_seen(clear=True)
    maas_peer.fail_requests(path="machines/", status="503 Service Unavailable")
    live = provider.read([maas_server("maas-read")])
    assert live["Server/maas-read"].state[mapping.STATE] == "Ready"
    assert maas_peer.requests_seen() == ["GET machines/", "GET machines/"]


def test_a_hanging_region_fails_after_the_timeout(maas_peer: MaasPeer) -> None:
    client = MaasClient(
        maas_peer.url,
        ApiKey.parse(maas_peer.api_key),
        credential="maas-key",
        limiter=Limiter(parallelism=2, per_endpoint=1),
        timeout=0.5,
    )
    try:
        assert any(m["hostname"] == "maas-read" for m in client.machines())
        maas_peer.fail_requests(path="machines/", hang=3.0)
        started = time.monotonic()
        with pytest.raises(UnreachableError) as caught:
            client.machines()
        assert time.monotonic() - started < 2.0
        assert str(caught.value) == f"{maas_peer.url} did not answer: no answer within 0.5s"
        # The slot was given back and the loop still serves the next call.
        assert client.machine(system_id_of("maas-read"))["hostname"] == "maas-read"
    finally:
        maas_peer.clear_faults()
        client.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("maas 127.0.0.1")]


def test_a_permanent_http_error_names_the_call(maas_peer: MaasPeer) -> None:
    client = MaasClient(
        maas_peer.url,
        ApiKey.parse(maas_peer.api_key),
        credential="maas-key",
        limiter=Limiter(parallelism=2, per_endpoint=1),
        timeout=5,
    )
    try:
        with pytest.raises(PermanentError, match=r"Machine\.read: HTTP 404 "):
            client.machine("nosuch")
        with pytest.raises(PermanentError, match=r"API description has no Machine\.rescue_mode"):
            client.machine_op(system_id_of("maas-read"), "rescue_mode")
    finally:
        client.close()


def test_an_api_key_that_is_not_one_is_refused_without_echoing_it() -> None:
    with pytest.raises(PermanentError) as caught:
        ApiKey.parse("consumer:only-two-parts-secret")
    assert "only-two-parts-secret" not in str(caught.value)
    assert "secret" not in repr(ApiKey.parse("a:b:c-secret"))


def test_deploy_stores_user_data_and_reports_its_hash(
    provider: MaasProvider, maas_peer: MaasPeer
) -> None:
    server = maas_server("maas-deploy", distro_series="noble")
    live = provider.execute(
        action(
            "provisioning.deploy",
            server.address,
            distroSeries="noble",
            userData=CLOUD_CONFIG,
            userDataHash=digest_of(CLOUD_CONFIG),
        ),
        server,
    )
    assert live.state[mapping.STATE] == "Deployed"
    assert live.state[mapping.DISTRO] == "noble"
    assert live.state[mapping.USER_DATA_HASH] == digest_of(CLOUD_CONFIG)
    assert maas_peer.machines_state()["maas-deploy"]["user_data"] == CLOUD_CONFIG
    released = provider.execute(action("provisioning.release", server.address), server)
    assert released.state[mapping.STATE] == "Ready"
    assert mapping.USER_DATA_HASH not in released.state


def test_failed_deployment_reports_maas_message(
    provider: MaasProvider, maas_peer: MaasPeer
) -> None:
    server = maas_server("maas-fail")
    maas_peer.fail_next("maas-fail", "deployment", "curtin: no disk matches /dev/nvme0n1")
    with pytest.raises(PermanentError) as caught:
        provider.execute(action("provisioning.deploy", server.address), server)
    assert "deployment failed: curtin: no disk matches /dev/nvme0n1" in str(caught.value)
    live = provider.read([server])[server.address]
    assert live.state[mapping.STATE] == "FailedDeployment"
    assert live.health is Health.DEGRADED


def test_commission_a_new_machine(provider: MaasProvider) -> None:
    server = maas_server("maas-new", state=ProvisioningState.READY)
    live = provider.execute(action("provisioning.commission", server.address), server)
    assert live.state[mapping.STATE] == "Ready"


def test_release_a_deployed_machine(provider: MaasProvider) -> None:
    server = maas_server("maas-release", state=ProvisioningState.RELEASED)
    live = provider.execute(action("provisioning.release", server.address), server)
    assert live.state[mapping.STATE] == "Ready"


def test_tags_are_created_and_set(provider: MaasProvider, maas_peer: MaasPeer) -> None:
    server = maas_server("maas-tags", tags=["gpu-l40", "yul1"])
    provider.read([server])
    maas_peer.requests_seen(clear=True)
    live = provider.execute(
        action("provisioning.tags", server.address, add=["gpu-l40", "yul1"], remove=[]), server
    )
    assert live.state[mapping.TAGS] == ["gpu-l40", "yul1"]
    # One machine is looked up by hostname, never by listing all of them.
    assert maas_peer.requests_seen() == [
        "GET machines/?hostname=maas-tags",
        "GET tags/",
        "POST tags/",
        "POST tags/gpu-l40/?op=update_nodes",
        "POST tags/",
        "POST tags/yul1/?op=update_nodes",
        "GET machines/?hostname=maas-tags",
    ]
    live = provider.execute(
        action("provisioning.tags", server.address, add=[], remove=["yul1"]), server
    )
    assert live.state[mapping.TAGS] == ["gpu-l40"]


def test_unknown_operation_is_refused(provider: MaasProvider) -> None:
    server = maas_server("maas-read")
    with pytest.raises(PermanentError, match=r"cannot perform 'power\.on'"):
        provider.execute(action("power.on", server.address), server)


# --- end to end through the engine --------------------------------------------------------------

TEMPLATE = """\
#cloud-config
hostname: {{ server.hostname }}
packages:
{% for p in vars.packages %}  - {{ p }}
{% endfor %}
write_files:
  - path: /etc/metalform/labels.json
    content: '{{ server.labels | tojson }}'
"""


def write_repo(root: Path, url: str) -> None:
    (root / "cloud-init").mkdir(parents=True)
    (root / "cloud-init" / "node.yaml.j2").write_text(TEMPLATE)
    (root / "infra.yaml").write_text(
        textwrap.dedent(f"""\
        apiVersion: metalform/v1
        kind: Credential
        metadata: {{name: bmc}}
        spec: {{type: basic, username: admin, password: {{fromEnv: E2E_BMC_PASSWORD}}}}
        ---
        apiVersion: metalform/v1
        kind: Credential
        metadata: {{name: maas-key}}
        spec: {{type: token, token: {{fromEnv: E2E_MAAS_API_KEY}}}}
        ---
        apiVersion: metalform/v1
        kind: Provider
        metadata: {{name: lab-maas}}
        spec: {{type: maas, url: "{url}", credential: maas-key, timeout: 5}}
        ---
        apiVersion: metalform/v1
        kind: Server
        metadata:
          name: maas-e2e
          labels: {{site: yul1, gpu: l40}}
        spec:
          bmc: {{driver: redfish, address: "http://127.0.0.1:9", credential: bmc}}
          power: "On"
          provisioning:
            provider: lab-maas
            state: Deployed
            distroSeries: noble
            tags: [gpu-l40]
            userData:
              template: cloud-init/node.yaml.j2
              vars: {{packages: [nvidia-driver-550, dcgm]}}
        """)
    )


def test_engine_plans_deploy_applies_and_converges(
    maas_peer: MaasPeer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    write_repo(repo, maas_peer.url)
    monkeypatch.setenv("E2E_BMC_PASSWORD", "bmc-secret-for-e2e")
    monkeypatch.setenv("E2E_MAAS_API_KEY", maas_peer.api_key)
    fleet = MemoryFleet({"Server/maas-e2e": {"state": {"power": "On"}}})
    engine = Engine(
        Settings(operation_timeout=15.0, timeout=5.0, retries=1),
        factories={"redfish": memory_factory(fleet), "maas": MaasProvider},
    )

    plan = engine.plan(repo).plan
    assert not plan.has_errors, [d.render() for d in plan.diagnostics]
    operations = [(a.operation, a.provider, a.disruptive) for a in plan.actions]
    assert operations == [
        ("provisioning.tags", "maas", False),
        ("provisioning.deploy", "maas", False),
    ]
    deploy = plan.actions[1]
    assert deploy.params["distroSeries"] == "noble"
    assert deploy.params["template"] == "cloud-init/node.yaml.j2"
    assert "hostname: maas-e2e" in deploy.params["userData"]
    assert "  - dcgm" in deploy.params["userData"]
    paths = {e.path for c in plan.changes for e in c.diff}
    assert {
        "provisioning.state",
        "provisioning.distroSeries",
        "provisioning.userDataHash",
        "provisioning.tags",
    } <= paths
    assert maas_peer.api_key not in plan.to_json()
    text = render_text(plan)
    assert "hostname: maas-e2e" in text and "provisioning.deploy" in text

    result = engine.apply(plan)
    assert result.count(ActionStatus.SUCCEEDED) == 2, result
    stored = maas_peer.machines_state()["maas-e2e"]
    assert stored["distro_series"] == "noble"
    assert stored["user_data"] == deploy.params["userData"]
    assert sorted(stored["tag_names"]) == ["gpu-l40"]

    again = engine.plan(repo).plan
    assert again.actions == []
    assert not again.has_changes

    # A changed template is drift: the machine is redeployed (release, then deploy).
    (repo / "cloud-init" / "node.yaml.j2").write_text(TEMPLATE + "runcmd: [nvidia-smi]\n")
    drift = engine.plan(repo).plan
    assert [(a.operation, a.disruptive) for a in drift.actions] == [
        ("provisioning.release", True),
        ("provisioning.deploy", True),
    ]
    assert drift.actions[1].depends_on == (drift.actions[0].id,)
    assert "runcmd: [nvidia-smi]" in drift.actions[1].params["userData"]
