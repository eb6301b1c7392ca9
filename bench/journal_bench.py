"""The providers' journal at fleet size, side by side with rewriting one JSON file per record.

    python bench/journal_bench.py [--records 20000]

An apply that creates a monitoring account on every BMC records one password fingerprint per
BMC. Times, for `--records` records: recording them all, loading them in a new process's
journal, and looking each one up; first with `providers.journal.FileJournal` (one appended line
per record), then with the plain alternative, one JSON document rewritten whole under the
same lock at every record (how the firmware upload journal was first written). The plain
one is timed on a tenth of the records and its per-record cost reported, since it grows
with the file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path

from providers.journal import FileJournal

FINGERPRINT = "hmac-sha256:0123456789abcdef"


def key(n: int) -> str:
    return f"https://10.{n // 250}.{n % 250}.1 monitor"


def whole_file_record(path: Path, k: str) -> None:
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            entries = json.loads(path.read_text()) if path.exists() else {}
            entries[k] = {"fingerprint": FINGERPRINT, "at": time.time()}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(entries))
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    n = parser.parse_args().records
    root = Path(tempfile.mkdtemp(prefix="journal-bench-"))

    path = root / "journal.jsonl"
    writer = FileJournal(path)
    start = time.perf_counter()
    for i in range(n):
        writer.record(key(i), fingerprint=FINGERPRINT)
    recorded = time.perf_counter() - start
    reader = FileJournal(path)
    start = time.perf_counter()
    reader.get(key(0))
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    found = sum(1 for i in range(n) if reader.get(key(i)) is not None)
    looked = time.perf_counter() - start
    assert found == n, f"{found} of {n} found"
    print(f"journal ({n} records, {path.stat().st_size / 1e6:.1f} MB):")
    print(f"  record  {recorded / n * 1e6:8.1f} us each ({recorded:.2f} s in all)")
    print(f"  load    {loaded * 1e3:8.1f} ms")
    print(f"  lookup  {looked / n * 1e6:8.1f} us each")

    plain = root / "whole.json"
    tenth = max(1, n // 10)
    start = time.perf_counter()
    for i in range(tenth):
        whole_file_record(plain, key(i))
    rewritten = time.perf_counter() - start
    print(f"whole-file JSON ({tenth} records, {plain.stat().st_size / 1e6:.1f} MB at the end):")
    print(
        f"  record  {rewritten / tenth * 1e6:8.1f} us each on average "
        f"({rewritten:.2f} s; each record rewrites everything recorded before it)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
