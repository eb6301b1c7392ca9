"""Firmware baselines against the lab BMC: an update converges and reads back, a failing task
fails its action with the BMC's message and skips the reset, an apply killed in the middle
of an update is resumed by the next plan and apply without a second flash, and a BMC that
takes multipart uploads gets the image pushed instead of a SimpleUpdate."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from metalform.lab.redfish import LabSystem, RedfishPeer
from metalform.lab.redfish_firmware import IMAGES_DIR, MULTIPART_PUSH, image_bytes, publish_image
from reconciler.engine import Engine, Settings
from reconciler.model import ActionStatus
from tests.fixtures.redfish import own_bmc

pytestmark = [pytest.mark.peer]
PASSWORD_VAR = "FIRMWARE_BMC_PASSWORD"


@pytest.fixture
def bmc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedfishPeer]:
    with own_bmc(
        tmp_path,
        monkeypatch,
        PASSWORD_VAR,
        [LabSystem(identity="fw-1", power_state="On", manufacturer="Acme", model="G8")],
    ) as peer:
        yield peer


def settings(peer: RedfishPeer, **changes: Any) -> dict[str, Any]:
    """The lab BMC's update switches (seconds, failWith) and its SimpleUpdate count."""
    response = requests.post(f"{peer.url}/lab/v1/firmware", json=changes, timeout=5)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def repo(tmp_path: Path, peer: RedfishPeer, components: dict[str, str]) -> Path:
    """A desired state: one Server on the lab BMC with a baseline of `components`."""
    lines = []
    for name, version in components.items():
        file, digest = publish_image(peer.state_dir / IMAGES_DIR, name, version)
        lines.append(
            f"    - name: {name}\n      version: '{version}'\n"
            f"      image: {{url: '{peer.url}/lab/v1/images/{file}', sha256: {digest}}}\n"
        )
    path = tmp_path / "repo"
    path.mkdir(exist_ok=True)
    (path / "fleet.yaml").write_text(f"""apiVersion: metalform/v1
kind: Credential
metadata: {{name: bmc}}
spec: {{username: admin, password: {{fromEnv: {PASSWORD_VAR}}}}}
---
apiVersion: metalform/v1
kind: FirmwareBaseline
metadata: {{name: g8}}
spec:
  match: {{manufacturer: Acme, model: G8}}
  components:
{"".join(lines)}---
apiVersion: metalform/v1
kind: Server
metadata: {{name: fw-1}}
spec:
  bmc: {{driver: redfish, address: "{peer.url}", systemId: fw-1, credential: bmc}}
  firmware: {{baseline: g8}}
""")
    return path


def bmc_get(peer: RedfishPeer, path: str) -> dict[str, Any]:
    """A Redfish resource of the lab BMC, read as an operator would."""
    password = os.environ[PASSWORD_VAR]
    response = requests.get(f"{peer.url}{path}", auth=("admin", password), timeout=5)
    response.raise_for_status()
    doc: dict[str, Any] = response.json()
    return doc


def engine() -> Engine:
    return Engine(Settings(timeout=2.0, retries=1, operation_timeout=30.0))


def operations(plan: Any) -> list[tuple[str, str]]:
    return [(a.operation, a.status.value) for a in plan.actions]


def apply_killed_when(path: Path, tmp_path: Path, ready: Callable[[], bool], what: str) -> None:
    """`metalform plan` then `metalform apply` in a process SIGKILLed as soon as `ready()`."""
    plan_file = tmp_path / "plan.json"
    metalform = [sys.executable, "-m", "metalform.cli"]
    subprocess.run([*metalform, "plan", "-C", str(path), "-o", str(plan_file)], check=True)
    apply = subprocess.Popen(
        [*metalform, "apply", "-C", str(path), str(plan_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready():
            assert apply.poll() is None, f"apply ended before {what}"
            assert time.monotonic() < deadline, f"apply never got to {what}"
            time.sleep(0.05)
    finally:
        os.killpg(apply.pid, signal.SIGKILL)
        apply.wait()


def test_an_update_converges_reads_back_and_activates_bios_at_the_reset(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    settings(bmc, seconds=0.5)
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0", "BMC": "2.1.0"})
    e = engine()
    run = e.plan(path)
    diff = {d.path: (d.before, d.after) for c in run.plan.changes for d in c.diff}
    assert diff == {"firmware.BIOS": ("1.0.0", "1.2.0"), "firmware.BMC": ("2.0.0", "2.1.0")}
    assert operations(run.plan) == [
        ("firmware.update", "planned"),
        ("firmware.update", "planned"),
        ("firmware.reset", "planned"),
    ]
    reset = run.plan.actions[2]
    assert reset.disruptive and set(reset.depends_on) == {1, 2}
    result = e.apply(run.plan)
    assert result.ok, [r.error for r in result.results.values()]
    assert settings(bmc)["simpleUpdates"] == 2
    again = e.plan(path).plan
    assert again.actions == []
    live = {d.path for c in again.changes for d in c.diff}
    assert live == set()


def test_a_failing_task_names_the_bmc_message_and_skips_the_reset(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    settings(bmc, seconds=0.3, failWith="flash write error at block 0x3f00")
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0"})
    e = engine()
    result = e.apply(e.plan(path).plan)
    by = {r.operation: r for r in result.results.values()}
    assert by["firmware.update"].status is ActionStatus.FAILED
    assert "flash write error at block 0x3f00" in (by["firmware.update"].error or "")
    assert by["firmware.reset"].status is ActionStatus.SKIPPED
    # Nothing was staged: the next plan flashes again, and no reset happened in between.
    assert operations(e.plan(path).plan)[0] == ("firmware.update", "planned")


def test_an_image_with_another_digest_is_never_handed_to_the_bmc(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0"})
    text = (path / "fleet.yaml").read_text()
    digest = text.split("sha256: ")[1].split("}")[0]
    (path / "fleet.yaml").write_text(text.replace(digest, "'" + "0" * 64 + "'"))
    before = settings(bmc, resetCount=True)["simpleUpdates"]
    e = engine()
    result = e.apply(e.plan(path).plan)
    failed = next(r for r in result.results.values() if r.operation == "firmware.update")
    assert failed.status is ActionStatus.FAILED
    assert "nothing was flashed" in (failed.error or "")
    assert settings(bmc)["simpleUpdates"] == before == 0


def test_an_apply_killed_during_an_update_is_resumed_without_a_second_flash(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    settings(bmc, seconds=6.0)
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0"})
    apply_killed_when(path, tmp_path, lambda: settings(bmc)["simpleUpdates"] > 0, "the update")

    e = engine()
    plan = e.plan(path).plan
    wait = plan.actions[0]
    assert (wait.operation, wait.status) == ("firmware.wait", ActionStatus.PLANNED)
    assert wait.reason.startswith("firmware update in progress (")
    assert wait.reason.endswith("%)")
    assert [a.operation for a in plan.actions] == ["firmware.wait", "firmware.reset"]

    result = e.apply(plan)
    assert result.ok, [r.error for r in result.results.values()]
    assert settings(bmc)["simpleUpdates"] == 1  # attached to the running task: one flash only
    assert e.plan(path).plan.actions == []


def test_a_multipart_push_converges_reads_back_and_makes_no_simple_update(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    settings(bmc, seconds=0.3, multipart=True, simpleUpdate=False)
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0"})
    e = engine()
    plan = e.plan(path).plan
    assert operations(plan) == [("firmware.update", "planned"), ("firmware.reset", "planned")]
    result = e.apply(plan)
    assert result.ok, [r.error for r in result.results.values()]
    counts = settings(bmc)
    assert (counts["multipartUpdates"], counts["simpleUpdates"]) == (1, 0)
    assert bmc_get(bmc, "/redfish/v1/UpdateService/FirmwareInventory/fw-1-BIOS")["Version"] == (
        "1.2.0"
    )
    tasks = bmc_get(bmc, "/redfish/v1/TaskService/Tasks")["Members"]
    task = bmc_get(bmc, tasks[-1]["@odata.id"])
    assert task["Payload"]["TargetUri"] == MULTIPART_PUSH
    assert json.loads(task["Payload"]["JsonBody"]) == {
        "Targets": ["/redfish/v1/UpdateService/FirmwareInventory/fw-1-BIOS"],
        "@Redfish.OperationApplyTime": "Immediate",
    }
    assert e.plan(path).plan.actions == []


def test_an_upload_the_bmc_finds_corrupted_fails_with_its_message_and_skips_the_reset(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    settings(bmc, seconds=0.1, multipart=True, simpleUpdate=False)
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0"})
    # A rebuilt image whose digest the baseline pins, but not the one the vendor published.
    rebuilt = image_bytes("BIOS", "1.2.0") + b"\n"
    (bmc.state_dir / IMAGES_DIR / "bios-1.2.0-rebuilt.json").write_bytes(rebuilt)
    text = (path / "fleet.yaml").read_text()
    digest = text.split("sha256: ")[1].split("}")[0]
    text = text.replace(digest, hashlib.sha256(rebuilt).hexdigest())
    (path / "fleet.yaml").write_text(text.replace("bios-1.2.0.json", "bios-1.2.0-rebuilt.json"))
    e = engine()
    result = e.apply(e.plan(path).plan)
    by = {r.operation: r for r in result.results.values()}
    assert by["firmware.update"].status is ActionStatus.FAILED
    error = by["firmware.update"].error or ""
    assert "the uploaded image of BIOS 1.2.0 failed its SHA-256 check" in error, error
    assert by["firmware.reset"].status is ActionStatus.SKIPPED
    counts = settings(bmc)
    assert (counts["multipartUpdates"], counts["simpleUpdates"]) == (1, 0)


def test_a_bmc_offering_no_update_method_is_a_clear_error_and_nothing_is_sent(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    settings(bmc, multipart=False, simpleUpdate=False)
    path = repo(tmp_path, bmc, {"BMC": "2.1.0"})
    e = engine()
    result = e.apply(e.plan(path).plan)
    failed = next(r for r in result.results.values() if r.operation == "firmware.update")
    assert failed.status is ActionStatus.FAILED
    assert "offers neither MultipartHttpPushUri nor SimpleUpdate" in (failed.error or "")
    counts = settings(bmc)
    assert (counts["multipartUpdates"], counts["simpleUpdates"]) == (0, 0)


def test_a_push_staged_before_a_crash_is_planned_as_the_reset_alone(
    bmc: RedfishPeer, tmp_path: Path
) -> None:
    """A pushed task names no image: the upload journal tells the next plan it was ours."""
    settings(bmc, seconds=2.0, multipart=True, simpleUpdate=False)
    path = repo(tmp_path, bmc, {"BIOS": "1.2.0"})
    journal = Path(os.environ["XDG_STATE_HOME"]) / "metalform" / "redfish-uploads.jsonl"
    # Killed once the push is uploaded and recorded; the reset is 2 s away.
    apply_killed_when(path, tmp_path, journal.exists, "the push")
    assert settings(bmc)["multipartUpdates"] == 1
    tasks = bmc_get(bmc, "/redfish/v1/TaskService/Tasks")["Members"]
    deadline = time.monotonic() + 20
    while bmc_get(bmc, tasks[-1]["@odata.id"])["TaskState"] != "Completed":
        assert time.monotonic() < deadline, "the BMC's update task never ended"
        time.sleep(0.1)
    assert "ImageURI" not in bmc_get(bmc, tasks[-1]["@odata.id"])["Payload"]["JsonBody"]
    assert bmc_get(bmc, "/redfish/v1/UpdateService/FirmwareInventory/fw-1-BIOS")["Version"] == (
        "1.0.0"
    )  # staged until the reset

    e = engine()
    plan = e.plan(path).plan
    assert operations(plan) == [("firmware.reset", "planned")]
    assert "staged until the next reset: BIOS 1.2.0" in (plan.actions[0].reason or "")
    result = e.apply(plan)
    assert result.ok, [r.error for r in result.results.values()]
    assert settings(bmc)["multipartUpdates"] == 1  # never pushed twice
    assert bmc_get(bmc, "/redfish/v1/UpdateService/FirmwareInventory/fw-1-BIOS")["Version"] == (
        "1.2.0"
    )
    assert e.plan(path).plan.actions == []
