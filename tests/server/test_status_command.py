"""`metalform status`: reads what the server recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalform.cli import main
from tests.server.harness import Harness


def test_status_shows_revisions_and_resources(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    harness.fleet.down.add("Server/b2")
    plan = harness.plan()
    harness.fleet.down.clear()
    harness.apply(plan["id"])
    assert main(["status", "--database", harness.config.database]) == 0
    out = capsys.readouterr().out
    assert f"Repository {harness.service.repository}" in out
    assert f"last applied: {harness.remote.main}" in out
    assert "resources: 5 (2 BiosTemplate, 1 Credential, 2 Server)" in out
    lines = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.strip().startswith("Server/")
    }
    assert lines["Server/a1"][1:3] == ["Synced", "Healthy"]
    assert lines["Server/b2"][1:3] == ["Unknown", "Unreachable"]


def test_status_in_a_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("METALFORM_DATABASE", raising=False)
    assert main(["status", "-C", str(tmp_path)]) == 1
    assert "no state database at" in capsys.readouterr().err
    from metalform.store import Store

    Store.open(f"sqlite:///{tmp_path / 'metalform.db'}").close()
    assert main(["status", "-C", str(tmp_path)]) == 0
    assert "No repository has been planned yet." in capsys.readouterr().out
