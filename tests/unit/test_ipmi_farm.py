"""Many IPMI BMCs in one farm process, planned and applied through the IPMI provider."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus

BMCS = 30
PASSWORD = "farm-test-secret"
SERVER = """---
apiVersion: metalform/v1
kind: Server
metadata: {{name: ipmi-{i:02d}}}
spec:
  bmc: {{driver: ipmi, address: "127.0.0.1:{port}", credential: ipmi}}
  power: On
"""


@pytest.fixture
def farm(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The first port of BMCS BMCs answering at 20 ms a packet."""
    monkeypatch.setenv("IPMI_FARM_PASSWORD", PASSWORD)
    args = ["--count", str(BMCS), "--port", "0", "--latency", "0.02", "--exit-with-stdin"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "metalform.lab.ipmi_farm", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        yield int(ready["ports"][0])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_a_farm_of_ipmi_bmcs_is_planned_and_applied(
    farm: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPMI_PASSWORD", PASSWORD)
    head = (
        "apiVersion: metalform/v1\nkind: Credential\nmetadata: {name: ipmi}\n"
        "spec: {username: admin, password: {fromEnv: IPMI_PASSWORD}}\n"
    )
    servers = "".join(SERVER.format(i=i, port=farm + i) for i in range(BMCS))
    (tmp_path / "inventory.yaml").write_text(head + servers)
    engine = Engine(Settings(parallelism=BMCS))
    started = time.monotonic()
    plan = engine.plan(tmp_path).plan
    seconds = time.monotonic() - started
    assert plan.summary.unreachable == 0
    assert [(a.operation, a.status) for a in plan.actions] == [
        ("power.on", ActionStatus.PLANNED)
    ] * BMCS
    # One login and three reads per BMC, all BMCs at once: well under a second of latency.
    assert seconds < 5, f"planning {BMCS} IPMI BMCs took {seconds:.1f}s"
    result = engine.apply(plan)
    assert result.count(ActionStatus.SUCCEEDED) == BMCS
    assert engine.plan(tmp_path).plan.actions == []
