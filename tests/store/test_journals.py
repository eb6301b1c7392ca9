"""Providers' journals in the store: what one replica records, another reads (after its short
cache), the newest entry of a key wins, and a store that fails never fails the action."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalform.store import Store
from metalform.store.journals import CACHE_SECONDS, StoreJournal
from providers.journal import open_journal
from providers.redfish.passwords import PasswordJournal
from reconciler.concurrency import Limiter
from reconciler.provider import ProviderContext
from reconciler.secrets import Secret


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_record_of_one_replica_is_read_by_another(store: Store) -> None:
    clock = Clock()
    mine = StoreJournal(store, "redfish-accounts", clock)
    with Store.open(store.url.render_as_string(hide_password=False)) as replica:
        theirs = StoreJournal(replica, "redfish-accounts", clock)
        _one_records_the_other_reads(mine, theirs, clock)
    # journals are apart: the same key in another journal is another entry
    assert StoreJournal(store, "redfish-uploads", clock).get("https://10.0.0.5 monitor") is None


def _one_records_the_other_reads(mine: StoreJournal, theirs: StoreJournal, clock: Clock) -> None:
    assert theirs.get("https://10.0.0.5 monitor") is None  # read (and cached) before
    mine.record("https://10.0.0.5 monitor", fingerprint="hmac-sha256:aa")
    mine.record("https://10.0.0.5 monitor", fingerprint="hmac-sha256:bb")  # newest wins
    assert (mine.get("https://10.0.0.5 monitor") or {})["fingerprint"] == "hmac-sha256:bb"
    assert theirs.get("https://10.0.0.5 monitor") is None  # within its cache time
    clock.now += CACHE_SECONDS
    entry = theirs.get("https://10.0.0.5 monitor")
    assert entry is not None and entry["fingerprint"] == "hmac-sha256:bb" and entry["at"] > 0


def test_one_query_per_journal_however_many_lookups(store: Store) -> None:
    clock = Clock()
    for n in range(50):
        store.record_journal("redfish-accounts", f"bmc-{n} monitor", {"fingerprint": str(n)})
    queries: list[str] = []
    counting = _Counting(store, queries)
    journal = StoreJournal(counting, "redfish-accounts", clock)  # type: ignore[arg-type]
    assert all(
        (journal.get(f"bmc-{n} monitor") or {}).get("fingerprint") == str(n) for n in range(50)
    )
    assert queries == ["redfish-accounts"]


def test_a_failing_store_neither_fails_a_record_nor_forgets_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = StoreJournal(_Down(), "redfish-accounts")  # type: ignore[arg-type]
    journal.record("bmc-1 monitor", fingerprint="hmac-sha256:aa")  # logged, not raised
    assert (journal.get("bmc-1 monitor") or {}).get("fingerprint") == "hmac-sha256:aa"
    assert "cannot record in the journal redfish-accounts: database is down" in caplog.text
    assert "cannot read the journal redfish-accounts: database is down" in caplog.text


def test_providers_use_the_contexts_journals_else_a_file(store: Store, tmp_path: Path) -> None:
    context = ProviderContext(limiter=Limiter(1, 1), credential=lambda name: None)  # type: ignore[arg-type,return-value]
    in_file = PasswordJournal(open_journal(context, "redfish-accounts", tmp_path / "a.jsonl"))
    in_file.record("https://10.0.0.5", "monitor", Secret("pw-1"))
    assert (tmp_path / "a.jsonl").exists()
    context.journals = lambda name: StoreJournal(store, name)
    in_store = PasswordJournal(open_journal(context, "redfish-accounts", tmp_path / "b.jsonl"))
    in_store.record("https://10.0.0.5", "monitor", Secret("pw-1"))
    assert not (tmp_path / "b.jsonl").exists()
    assert in_store.state("https://10.0.0.5", "monitor", Secret("pw-1")) == "current"
    assert in_store.state("https://10.0.0.5", "monitor", Secret("pw-2")) == "other"
    [row] = store.journal_entries("redfish-accounts").values()
    assert row["fingerprint"].startswith("hmac-sha256:") and "pw-1" not in str(row)


class _Counting:
    """A store that counts the journal reads it answers."""

    def __init__(self, store: Store, queries: list[str]) -> None:
        self._store = store
        self._queries = queries

    def journal_entries(self, journal: str) -> dict[str, dict[str, object]]:
        self._queries.append(journal)
        return self._store.journal_entries(journal)


class _Down:
    """A store whose database does not answer."""

    def journal_entries(self, journal: str) -> dict[str, dict[str, object]]:
        raise OSError("database is down")

    def record_journal(self, journal: str, key: str, entry: dict[str, object]) -> None:
        raise OSError("database is down")
