"""The journal of pushed firmware images: keyed by BMC, task and start time, kept on disk,
shared by two writers, pruned, and never in the way when it cannot be read or written."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from providers.redfish.uploads import KEEP_DAYS, UploadJournal

BMC = "https://10.0.0.5"
TASK = "/redfish/v1/TaskService/Tasks/7"
START = "2026-11-30T10:00:00+00:00"
IMAGE = "https://images.example/bios-1.2.0.bin"


def test_a_recorded_push_is_found_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "state" / "redfish-uploads.json"
    UploadJournal(path).record(BMC, TASK, START, IMAGE, "ab" * 32)
    later = UploadJournal(path)  # another process, after a crash
    assert later.image_of(BMC, TASK, START) == IMAGE
    assert later.image_of(BMC, TASK + "/", START) == IMAGE
    # The BMC reused the id after its own restart: another task, not ours.
    assert later.image_of(BMC, TASK, "2026-12-01T08:00:00+00:00") is None
    assert later.image_of("https://10.0.0.6", TASK, START) is None
    assert "ab" * 32 in path.read_text()  # the digest, for the record; never a secret


def test_two_writers_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "uploads.json"
    writers = [
        threading.Thread(
            target=lambda n=n: UploadJournal(path).record(BMC, f"{TASK}{n}", START, IMAGE, "x")
        )
        for n in range(20)
    ]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    found = UploadJournal(path)
    assert all(found.image_of(BMC, f"{TASK}{n}", START) == IMAGE for n in range(20))


def test_old_entries_are_dropped_and_a_broken_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "uploads.json"
    old = time.time() - (KEEP_DAYS + 1) * 86400
    key = f"{BMC} {TASK} {START}"
    path.write_text(json.dumps({"version": 1, "uploads": {key: {"image": IMAGE, "at": old}}}))
    assert UploadJournal(path).image_of(BMC, TASK, START) == IMAGE  # still there when read
    UploadJournal(path).record(BMC, "/t/8", None, IMAGE, "x")
    assert UploadJournal(path).image_of(BMC, TASK, START) is None  # pruned at the next write
    path.write_text("{not json")
    journal = UploadJournal(path)
    assert journal.image_of(BMC, "/t/8", None) is None
    journal.record(BMC, "/t/9", None, IMAGE, "x")
    assert UploadJournal(path).image_of(BMC, "/t/9", None) == IMAGE


def test_an_unwritable_journal_does_not_stop_the_flash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = UploadJournal(blocker / "sub" / "uploads.json")  # its folder cannot be made
    journal.record(BMC, TASK, START, IMAGE, "x")  # logged, not raised
    disabled = UploadJournal(None)
    disabled.record(BMC, TASK, START, IMAGE, "x")
    assert disabled.image_of(BMC, TASK, START) is None
