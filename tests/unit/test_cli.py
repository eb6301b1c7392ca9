"""The CLI against the in-memory provider: formats, saved plans, exit codes, targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from metalform import cli
from providers.memory import MemoryFleet, memory_factory
from reconciler import engine

CASE = Path(__file__).parent / "cases" / "ordering-across-servers" / "desired"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fleet = MemoryFleet(
        {
            "Server/b2": {
                "state": {
                    "power": "On",
                    "bios.attributes.ProcVirtualization": "Disabled",
                    "bios.attributes.SysProfile": "PerfOptimized",
                }
            },
            "Server/a1": {
                "state": {
                    "power": "Off",
                    "bios.attributes.ProcVirtualization": "Enabled",
                    "bios.attributes.SysProfile": "PowerSaver",
                }
            },
        }
    )
    factory = memory_factory(fleet)
    monkeypatch.setattr(
        engine, "installed_providers", lambda: {"redfish": factory, "ipmi": factory}
    )
    monkeypatch.setenv("BMC_PASSWORD", "cli-test-password")
    monkeypatch.setenv("NO_COLOR", "1")
    shutil.copytree(CASE, tmp_path / "repo")
    return tmp_path / "repo"


def test_plan_save_show_apply_converge(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planfile = tmp_path / "p.json"
    assert cli.main(["plan", "-C", str(repo), "-o", str(planfile), "--detailed-exitcode"]) == 2
    text = capsys.readouterr().out
    assert "~ Server/a1" in text and "#4 power.reset  (after #2)  [disruptive]" in text
    assert "Plan: 0 to create, 2 to update, 0 to delete, 0 unchanged; 4 actions to run." in text

    saved = json.loads(planfile.read_text())
    assert saved["formatVersion"] == 1 and saved["revision"].startswith("worktree:")
    assert [a["operation"] for a in saved["actions"]] == [
        "bios.set",
        "bios.set",
        "power.on",
        "power.reset",
    ]
    assert set(saved["liveFingerprints"]) == {"Server/a1", "Server/b2"}

    assert cli.main(["show", str(planfile), "--format", "markdown"]) == 0
    markdown = capsys.readouterr().out
    assert markdown.startswith("<!-- metalform:plan -->")
    assert "| `bios.attributes.SysProfile` | PowerSaver |  | PerfOptimized |" in markdown

    assert cli.main(["show", str(planfile), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["actions"] == saved["actions"]

    assert cli.main(["apply", str(planfile)]) == 0
    assert "4 succeeded, 0 failed" in capsys.readouterr().out
    assert cli.main(["plan", "-C", str(repo), "--detailed-exitcode"]) == 0
    assert "No changes." in capsys.readouterr().out
    # The same plan again: the live state it was made against is gone.
    assert cli.main(["apply", str(planfile)]) == 1
    assert "plan is stale" in capsys.readouterr().err


def test_target_and_unknown_target(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "-C", str(repo), "--target", "Server/a1", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {a["address"] for a in plan["actions"]} == {"Server/a1"}
    assert cli.main(["plan", "-C", str(repo), "--target", "Server/zz"]) == 1
    assert "Server/zz: --target names no resource" in capsys.readouterr().out


def test_exclude_globs_on_plan_and_auto_approve(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plan", "-C", str(repo), "--exclude", "Server/a*", "--format", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert {a["address"] for a in plan["actions"]} == {"Server/b2"}
    assert cli.main(["apply", "-C", str(repo), "--auto-approve", "--exclude", "Server/b?"]) == 0
    assert "2 succeeded, 0 failed" in capsys.readouterr().out
    assert cli.main(["plan", "-C", str(repo), "--format", "json"]) == 0
    left = json.loads(capsys.readouterr().out)
    assert {a["address"] for a in left["actions"]} == {"Server/b2"}


def test_exclude_bad_glob_and_with_a_plan_file(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["plan", "-C", str(repo), "--exclude", "Server/a[1"]) == 1
    err = capsys.readouterr().err
    assert "--exclude 'Server/a[1' is not an address glob like Server/gpu-*" in err
    assert "Traceback" not in err
    planfile = tmp_path / "p.json"
    assert cli.main(["plan", "-C", str(repo), "-o", str(planfile)]) == 0
    capsys.readouterr()
    assert cli.main(["apply", str(planfile), "--exclude", "Server/a1"]) == 1
    assert "apply PLANFILE runs exactly its plan" in capsys.readouterr().err
    assert cli.main(["apply", str(planfile), "--set-unknown-passwords"]) == 1
    assert (
        "--set-unknown-passwords changes what is planned; apply PLANFILE runs exactly its plan "
        "(plan again with --set-unknown-passwords, or apply -C DIR --auto-approve "
        "--set-unknown-passwords)"
    ) in capsys.readouterr().err


def test_refresh_only_shows_drift_without_actions(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        cli.main(
            ["plan", "-C", str(repo), "--refresh-only", "--detailed-exitcode", "--format", "json"]
        )
        == 2
    )
    plan = json.loads(capsys.readouterr().out)
    assert plan["actions"] == [] and plan["summary"]["update"] == 2


def test_expected_failures_have_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["apply", str(tmp_path / "missing.json")]) == 1
    assert cli.main(["apply", "-C", str(tmp_path)]) == 1
    (tmp_path / "bad.json").write_text('{"formatVersion": 1}')
    assert cli.main(["show", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err
    assert "cannot read plan" in err
    assert "needs a PLANFILE" in err
    assert "is not a Metalform plan" in err
    assert "Traceback" not in err
