"""The journal of pushed firmware images: keyed by BMC, task and start time, kept on disk,
forgotten after KEEP_DAYS. (The journal file itself: tests/providers/test_journal.py.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

from providers.journal import FileJournal
from providers.redfish.uploads import KEEP_DAYS, UploadJournal

BMC = "https://10.0.0.5"
TASK = "/redfish/v1/TaskService/Tasks/7"
START = "2026-11-30T10:00:00+00:00"
IMAGE = "https://images.example/bios-1.2.0.bin"


def test_a_recorded_push_is_found_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "state" / "redfish-uploads.jsonl"
    UploadJournal(FileJournal(path)).record(BMC, TASK, START, IMAGE, "ab" * 32)
    later = UploadJournal(FileJournal(path))  # another process, after a crash
    assert later.image_of(BMC, TASK, START) == IMAGE
    assert later.image_of(BMC, TASK + "/", START) == IMAGE
    # The BMC reused the id after its own restart: another task, not ours.
    assert later.image_of(BMC, TASK, "2026-12-01T08:00:00+00:00") is None
    assert later.image_of("https://10.0.0.6", TASK, START) is None
    assert "ab" * 32 in path.read_text()  # the digest, for the record; never a secret


def test_a_push_older_than_the_kept_days_is_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "uploads.jsonl"
    old = time.time() - (KEEP_DAYS + 1) * 86400
    key = f"{BMC} {TASK} {START}"
    path.write_text(json.dumps({"key": key, "at": old, "image": IMAGE}) + "\n")
    assert UploadJournal(FileJournal(path)).image_of(BMC, TASK, START) is None
    recent = time.time() - (KEEP_DAYS - 1) * 86400
    path.write_text(json.dumps({"key": key, "at": recent, "image": IMAGE}) + "\n")
    assert UploadJournal(FileJournal(path)).image_of(BMC, TASK, START) == IMAGE


def test_without_a_file_the_journal_remembers_for_its_own_lifetime_only() -> None:
    disabled = UploadJournal(FileJournal(None))
    disabled.record(BMC, TASK, START, IMAGE, "x")
    assert disabled.image_of(BMC, TASK, START) == IMAGE
    assert UploadJournal(FileJournal(None)).image_of(BMC, TASK, START) is None
