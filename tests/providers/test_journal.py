"""The providers' journal file: entries survive the process, writers of this machine lose
nothing, readers follow what others append, a crash's torn line and a broken file are
skipped, the file is compacted, and a journal that cannot be written is never in the way."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

from providers.journal import COMPACT_SLACK, FileJournal


def _append(path: str, start: int, count: int) -> None:
    journal = FileJournal(Path(path))
    for n in range(start, start + count):
        journal.record(f"k{n}", n=n)


def test_the_newest_entry_of_a_key_wins_also_in_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "state" / "j.jsonl"
    first = FileJournal(path)
    first.record("bmc-1 admin", fingerprint="a")
    first.record("bmc-1 admin", fingerprint="b")
    entry = first.get("bmc-1 admin")
    assert entry is not None and entry["fingerprint"] == "b" and entry["at"] <= time.time()
    later = FileJournal(path)  # another process, after a crash
    entry = later.get("bmc-1 admin")
    assert entry is not None and entry["fingerprint"] == "b"
    assert later.get("bmc-2 admin") is None


def test_writers_in_several_processes_lose_nothing_and_a_reader_follows_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    reader = FileJournal(path)
    assert reader.get("k0") is None  # read before anything was written
    spawn = multiprocessing.get_context("spawn")
    writers = [spawn.Process(target=_append, args=(str(path), n * 200, 200)) for n in range(4)]
    threads = [
        threading.Thread(target=_append, args=(str(path), 800 + n * 50, 50)) for n in range(4)
    ]
    for w in [*writers, *threads]:
        w.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    for t in threads:
        t.join()
    # the reader sees every entry the others appended since it last looked
    assert all((reader.get(f"k{n}") or {}).get("n") == n for n in range(1000))
    assert len(path.read_text().splitlines()) == 1000


def test_a_torn_last_line_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    good = json.dumps({"key": "a", "at": time.time(), "v": 1})
    path.write_text(f'{good}\nnot json\n["no key"]\n{{"key": "b", "v"')
    journal = FileJournal(path)
    assert (journal.get("a") or {}).get("v") == 1
    assert journal.get("b") is None  # torn by a crash mid-append
    with path.open("a") as out:  # the writer comes back and finishes its line
        out.write(': 2, "at": 1e12}\n')
    assert (journal.get("b") or {}).get("v") == 2


def test_old_entries_are_forgotten_and_a_long_file_is_compacted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    now = time.time()
    lines = [{"key": "old", "at": now - 100, "v": 0}]
    lines += [{"key": f"k{n % 10}", "at": now, "v": n} for n in range(2 * COMPACT_SLACK)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    journal = FileJournal(path, keep_seconds=50)
    assert journal.get("old") is None
    assert (journal.get("k3") or {}).get("v") == 2 * COMPACT_SLACK - 7
    # the load compacted the file: one line per key still kept
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(e["key"] for e in kept) == [f"k{n}" for n in range(10)]
    journal.record("k3", v=-1)  # appends to the new file, read by the next process too
    assert (FileJournal(path).get("k3") or {}).get("v") == -1


def test_a_journal_that_cannot_be_written_is_never_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = FileJournal(blocker / "sub" / "j.jsonl")  # its folder cannot be made
    journal.record("a", v=1)  # logged, not raised; remembered for this process
    assert (journal.get("a") or {}).get("v") == 1
    memory = FileJournal(None)
    memory.record("a", v=1)
    assert (memory.get("a") or {}).get("v") == 1
