"""Credentials: missing secrets are plan errors naming their users; rotation is visible."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metalform import cli
from providers.memory import MemoryFleet, memory_factory
from reconciler import engine
from reconciler.credentials import users_of_credentials
from reconciler.errors import StalePlanError
from reconciler.load import load

CASE = Path(__file__).parent / "cases" / "ordering-across-servers" / "desired"
SECRET = "rotate-me-0123456789"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fleet = MemoryFleet(
        {
            "Server/b2": {"state": {"power": "Off"}},
            "Server/a1": {"state": {"power": "Off"}},
        }
    )
    factory = memory_factory(fleet)
    monkeypatch.setattr(
        engine, "installed_providers", lambda: {"redfish": factory, "ipmi": factory}
    )
    monkeypatch.setenv("METALFORM_FINGERPRINT_KEY", "test-key")
    monkeypatch.setenv("NO_COLOR", "1")
    shutil.copytree(CASE, tmp_path / "repo")
    return tmp_path / "repo"


def test_missing_secret_is_a_plan_error_naming_its_users(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BMC_PASSWORD", raising=False)
    assert cli.main(["plan", "-C", str(repo)]) == 1
    out = capsys.readouterr().out
    assert (
        "error: Credential/bmc: the secret of Credential/bmc is not set (environment "
        "variable BMC_PASSWORD); needed by Server/a1, Server/b2"
    ) in out


def test_fingerprint_stands_for_the_secret_and_rotation_makes_a_plan_stale(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BMC_PASSWORD", SECRET)
    planfile = tmp_path / "p.json"
    assert cli.main(["plan", "-C", str(repo), "-o", str(planfile)]) == 0
    text = planfile.read_text()
    assert SECRET not in text + capsys.readouterr().out
    first = json.loads(text)["credentialFingerprints"]["bmc"]
    assert first.startswith("hmac-sha256:")

    assert cli.main(["plan", "-C", str(repo), "--format", "json"]) == 0
    same = json.loads(capsys.readouterr().out)["credentialFingerprints"]["bmc"]
    assert same == first  # same secret, same key: same fingerprint

    monkeypatch.setenv("BMC_PASSWORD", SECRET + "-rotated")
    assert cli.main(["plan", "-C", str(repo), "--format", "json"]) == 0
    rotated = json.loads(capsys.readouterr().out)["credentialFingerprints"]["bmc"]
    assert rotated != first

    assert cli.main(["apply", str(planfile)]) == 1
    assert (
        "plan is stale: the secret of Credential/bmc changed since the plan was made"
        in capsys.readouterr().err
    )


def test_rotation_is_refused_by_the_engine(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BMC_PASSWORD", SECRET)
    e = engine.Engine()
    plan = e.plan(repo).plan
    monkeypatch.setenv("BMC_PASSWORD", "another")
    with pytest.raises(StalePlanError, match="Credential/bmc"):
        e.apply(plan)


def test_the_credentials_of_accounts_are_needed_also_through_a_bmc_profile(
    tmp_path: Path,
) -> None:
    (tmp_path / "fleet.yaml").write_text(
        """\
apiVersion: metalform/v1
kind: Credential
metadata: {name: bmc}
spec: {username: admin, password: {fromEnv: BMC_PASSWORD}}
---
apiVersion: metalform/v1
kind: Credential
metadata: {name: monitor}
spec: {username: monitor, password: {fromEnv: MONITOR_PASSWORD}}
---
apiVersion: metalform/v1
kind: Credential
metadata: {name: audit}
spec: {username: audit, password: {fromEnv: AUDIT_PASSWORD}}
---
apiVersion: metalform/v1
kind: BmcProfile
metadata: {name: standard}
spec:
  accounts: [{username: monitor, role: ReadOnly, credential: monitor}]
---
apiVersion: metalform/v1
kind: Server
metadata: {name: n1}
spec:
  bmc: {driver: redfish, address: "https://10.0.0.1", systemId: n1, credential: bmc,
        profile: standard}
---
apiVersion: metalform/v1
kind: Server
metadata: {name: n2}
spec:
  bmc:
    driver: redfish
    address: "https://10.0.0.2"
    systemId: n2
    credential: bmc
    accounts: [{username: audit, role: ReadOnly, credential: audit}]
""",
        encoding="utf-8",
    )
    resources = load(tmp_path).resources
    servers = [resources["Server/n1"], resources["Server/n2"]]
    assert users_of_credentials(servers, resources) == {
        "bmc": ["Server/n1", "Server/n2"],
        "monitor": ["Server/n1"],  # the profile's account, set on n1
        "audit": ["Server/n2"],  # an account in a list of the Server's own
    }
