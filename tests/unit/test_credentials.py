"""Credentials: missing secrets are plan errors naming their users; rotation is visible."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metalform import cli
from providers.memory import MemoryFleet, memory_factory
from reconciler import engine
from reconciler.errors import StalePlanError

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
