"""Hostile desired states: each is refused with file:line:column, fast, in bounded memory.

Each folder of `hostile/` holds `repo/` (a desired state written to crash, hang or exhaust
Metalform, or to make it print a secret) and `expected.txt` (what `metalform validate` prints on
stderr). `validate` runs in a child process limited to 1 GiB of address space and 10 seconds,
so a segfault, a hang or a memory blow-up fails the test rather than the test run. Regenerate
with METALFORM_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metalform import cli
from metalform.notify.payloads import notification_problems
from providers.memory import MemoryFleet
from reconciler.errors import InputError
from reconciler.load import load
from tests.badinput.test_corpus import SECRETS_IN_CORPUS

HOSTILE = Path(__file__).parent / "hostile"
CASES = sorted(p.name for p in HOSTILE.iterdir() if p.is_dir())
SECRETS = (
    *SECRETS_IN_CORPUS,
    "1234567890",
    "2001-12-14",
    "31415.9265",
    "c2VjcmV0LWJ5dGVz",
    "secret-bytes",
)
"""The literal secrets the cases write (behind YAML tags): none may be printed."""
MAX_BYTES = 1 << 30
MAX_SECONDS = 10.0
LOCATED = re.compile(r"[\w./-]+\.yaml:\d+:\d+: error: ")


def _bounded() -> None:
    """In the child, before exec: at most 1 GiB of address space."""
    resource.setrlimit(resource.RLIMIT_AS, (MAX_BYTES, MAX_BYTES))


def _validate(repo: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "NO_COLOR": "1", "BMC_PASSWORD": "pw-for-tests"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "metalform.cli", "validate", "-C", str(repo)],
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS,
        env=env,
        preexec_fn=_bounded,
        check=False,
    )
    return proc, time.monotonic() - start


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_is_refused_in_bounds(case: str) -> None:
    proc, seconds = _validate(HOSTILE / case / "repo")
    err = proc.stderr
    assert proc.returncode == 1, f"exit {proc.returncode} (negative: killed by a signal)\n{err}"
    assert seconds < MAX_SECONDS
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[-1].endswith("in the desired state; nothing was changed.")
    for line in lines[:-1]:
        assert LOCATED.match(line), f"no file:line:column in {line!r}"
    for secret in SECRETS:
        assert secret not in proc.stdout + err
    expected_file = HOSTILE / case / "expected.txt"
    if os.environ.get("METALFORM_UPDATE_GOLDEN"):
        expected_file.write_text(err)
    assert err == expected_file.read_text()


@pytest.mark.parametrize("case", CASES)
def test_hostile_input_changes_nothing(
    case: str, fleet: MemoryFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """What load refuses, plan and apply refuse with the same errors and no call to a BMC;
    the rest (templates) is what validate checks beyond loading."""
    repo = HOSTILE / case / "repo"
    try:
        state = load(repo)
    except InputError:
        assert cli.main(["plan", "-C", str(repo)]) == 1
        err = capsys.readouterr().err
        assert err == (HOSTILE / case / "expected.txt").read_text()
        assert cli.main(["apply", "--auto-approve", "-C", str(repo)]) == 1
        out, err2 = capsys.readouterr()
        assert err2 == err
        for secret in SECRETS:
            assert secret not in out + err2
    else:
        assert notification_problems(state), "validate's error must come from the templates"
    assert fleet.calls == []


def test_hostile_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
