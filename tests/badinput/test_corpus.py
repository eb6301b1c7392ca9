"""A corpus of broken repositories: each gives exactly the expected errors, and changes nothing.

Each folder of `corpus/` holds `repo/` (the broken desired state) and `expected.txt` (what
`metalform plan` prints on stderr). Apply with --auto-approve must exit 1 without one call to a
BMC. Regenerate with METALFORM_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from metalform import cli
from providers.memory import MemoryFleet

CORPUS = Path(__file__).parent / "corpus"
SECRETS_IN_CORPUS = ("Sup3rSecret!", "tok-live-123456", "hunter2-literal", "other-literal")
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_broken_repository(
    case: str, fleet: MemoryFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = CORPUS / case / "repo"
    assert cli.main(["plan", "-C", str(repo)]) == 1
    err = capsys.readouterr().err
    expected_file = CORPUS / case / "expected.txt"
    if os.environ.get("METALFORM_UPDATE_GOLDEN"):
        expected_file.write_text(err)
    expected = expected_file.read_text()
    assert expected.strip().endswith(
        "error in the desired state; nothing was changed."
    ) or expected.strip().endswith("errors in the desired state; nothing was changed.")
    assert ": error: " in expected
    assert err == expected
    assert "Traceback" not in err

    assert cli.main(["apply", "--auto-approve", "-C", str(repo)]) == 1
    out, err2 = capsys.readouterr()
    assert err2 == err
    assert fleet.calls == [], "nothing may be applied from a broken repository"
    for secret in SECRETS_IN_CORPUS:
        assert secret not in out + err + err2


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 20


def test_git_revision_errors_name_the_same_place(
    tmp_path: Path, fleet: MemoryFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rev reads the broken file from Git, not from the working tree, with the same location."""
    repo = tmp_path / "repo"
    shutil.copytree(CORPUS / "many-errors-at-once" / "repo", repo)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "broken"], check=True)
    # Fix the working tree: the revision must still be read from Git.
    for f in repo.glob("*.yaml"):
        f.unlink()
    assert cli.main(["validate", "-C", str(repo), "--rev", "HEAD"]) == 1
    err = capsys.readouterr().err
    assert err == (CORPUS / "many-errors-at-once" / "expected.txt").read_text()
    assert cli.main(["validate", "-C", str(repo)]) == 0
