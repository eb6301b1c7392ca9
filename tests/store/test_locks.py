"""One apply at a time per repository, enforced by the database across processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import text

from metalform.store import Store, apply_lock_name
from tests.store import lockholder

# child processes are involved: a hang must fail the test, not stall the run
pytestmark = pytest.mark.timeout(120)

REPO = "git.example/infra.git#main:."
LEASE = 1.5  # seconds a dead SQLite holder blocks the others; short to keep the test quick
SPAWN = multiprocessing.get_context("spawn")


@contextmanager
def holder(url: str, repository: str = REPO) -> Iterator[tuple[Any, Any, bool]]:
    """A child process trying the lock; yields (process, release queue, acquired).

    Queues, not an Event: setting an Event that a killed process was waiting on hangs."""
    report = SPAWN.Queue()
    release = SPAWN.Queue()
    process = SPAWN.Process(
        target=lockholder.hold, args=(url, repository, LEASE, report, release), daemon=True
    )
    process.start()
    try:
        acquired = report.get(timeout=60)
        yield process, release, acquired
    finally:
        if process.is_alive():
            release.put(True)
            process.join(10)
        if process.is_alive():
            process.kill()
            process.join()
        for queue in (report, release):
            queue.close()
            queue.join_thread()


def acquire_within(store: Store, seconds: float, repository: str = REPO) -> bool:
    with store.apply_lock(repository, wait_seconds=seconds) as held:
        return held is not None


@pytest.fixture
def lock_store(store_url: str) -> Iterator[Store]:
    with Store.open(store_url, lock_lease_seconds=LEASE) as opened:
        yield opened


def test_another_process_cannot_take_a_held_lock_until_released(lock_store: Store) -> None:
    with holder(str(lock_store.url.render_as_string(hide_password=False))) as (
        process,
        release,
        acquired,
    ):
        assert acquired
        with lock_store.apply_lock(REPO) as held:
            assert not held
        # another repository is not blocked
        with lock_store.apply_lock("other-repository") as other:
            assert other
        # past a lease: the holder renews it while alive
        time.sleep(LEASE * 1.5)
        assert lock_store.try_apply_lock(REPO) is None
        release.put(True)
        process.join(10)
        assert process.exitcode == 0
    assert acquire_within(lock_store, 5)


def test_a_killed_holder_does_not_block_forever(lock_store: Store) -> None:
    url = lock_store.url.render_as_string(hide_password=False)
    with holder(url) as (process, _release, acquired):
        assert acquired
        process.kill()
        process.join(10)
        # PostgreSQL frees the lock with the connection; SQLite once the lease runs out
        started = time.monotonic()
        assert acquire_within(lock_store, LEASE + 10)
        assert time.monotonic() - started < LEASE + 10


def test_a_held_lock_keeps_other_processes_out(lock_store: Store) -> None:
    url = lock_store.url.render_as_string(hide_password=False)
    with lock_store.apply_lock(REPO) as held:
        assert held and held.held
        with holder(url) as (_process, _release, acquired):
            assert not acquired
    with holder(url) as (_process, _release, acquired):
        assert acquired


def test_lock_is_exclusive_between_threads_and_not_reentrant(lock_store: Store) -> None:
    first = lock_store.try_apply_lock(REPO)
    assert first is not None
    try:
        assert lock_store.try_apply_lock(REPO) is None
        results: list[bool] = []
        thread = threading.Thread(
            target=lambda: results.append(lock_store.try_apply_lock(REPO) is not None)
        )
        thread.start()
        thread.join()
        assert results == [False]
    finally:
        first.release()
        first.release()  # idempotent
    assert not first.held
    second = lock_store.try_apply_lock(REPO)
    assert second is not None
    second.release()


def test_lock_handed_to_a_worker_thread(lock_store: Store) -> None:
    """The server takes the lock in the request (to answer 409) and releases it in the
    worker that runs the apply."""
    held = lock_store.try_apply_lock(REPO)
    assert held is not None
    worker = threading.Thread(target=held.release)
    worker.start()
    worker.join()
    assert acquire_within(lock_store, 1)


def test_lock_names_are_per_repository() -> None:
    assert apply_lock_name("a") != apply_lock_name("b")


def test_a_lock_taken_away_is_reported_lost(lock_store: Store) -> None:
    held = lock_store.try_apply_lock(REPO)
    assert held is not None and held.held
    with lock_store._engine.begin() as connection:
        if lock_store.dialect == "postgresql":
            # the database dropped the holder's connection (restart, network, admin)
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND pid <> pg_backend_pid()"
                )
            )
        else:
            # the holder stalled past its lease (suspended VM, ...) and another took over
            connection.execute(text("UPDATE locks SET expires_at = 0"))
    try:
        assert acquire_within(lock_store, 5)
        deadline = time.monotonic() + LEASE * 3
        while not held.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert held.lost and not held.held
    finally:
        held.release()
