"""Named locks held across processes: one apply at a time per repository.

PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held by a connection of
its own for as long as the lock is held. The server frees it when that connection ends, so a
crashed holder (process killed, host gone) never blocks the others for long.

SQLite: a row in `locks` with an owner and a lease. A thread renews the lease while the lock is
held; a holder that crashed stops renewing and its lease runs out. The owner names its host, PID
namespace, PID and the process's start time, so a holder of this host whose process is gone is
known dead at once (the lease only matters for a holder this host cannot see).

Both kinds renew (or check) from a heartbeat thread and mark the lock `lost` when they cannot,
so a long apply can notice that it no longer holds its lock.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import psutil
from sqlalchemy import Engine, delete, func, insert, select, text, update
from sqlalchemy.engine import Connection

from metalform.store.database import WRITE_OPTION
from metalform.store.tables import LockRow

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 10.0
"""How long a dead SQLite holder this host cannot see blocks the others (renewed every third)."""


def advisory_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for `name` (a hash: names are strings)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (or runs a plan): `host:pid:started:namespace:nonce` as a string."""

    host: str
    pid: int
    started: str
    """The process's start time: a PID reused by a later process does not match it."""
    namespace: str
    """The PID namespace: PIDs of another container on the same host mean nothing here."""
    nonce: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}:{self.namespace}:{self.nonce}"

    @classmethod
    def parse(cls, owner: str) -> Holder | None:
        """The holder an owner string names; None for other formats (older versions)."""
        parts = owner.split(":")
        if len(parts) != 5 or not parts[1].isascii() or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2], parts[3], parts[4])

    @property
    def label(self) -> str:
        """`host:pid`, for messages."""
        return f"{self.host}:{self.pid}"


def _start_token(pid: int) -> str | None:
    """The start time of process `pid` as the owner records it; None when it is gone."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None  # dead, not yet reaped by its parent
        return f"{process.create_time():.2f}"
    except psutil.NoSuchProcess:
        return None


@cache
def _pid_namespace() -> str:
    try:
        # "pid:[4026531836]": the inode tells namespaces apart
        return os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]") or "-"
    except OSError:
        return "-"


def this_process() -> Holder:
    """This process, with a fresh nonce (two locks of one process have different owners)."""
    pid = os.getpid()
    return Holder(
        socket.gethostname(), pid, _start_token(pid) or "-", _pid_namespace(), uuid.uuid4().hex[:12]
    )


def holder_alive(owner: str) -> bool | None:
    """False when `owner` was a process of this host (and PID namespace) that is gone; True
    when it still runs; None when this host cannot tell (another host, an older format)."""
    holder = Holder.parse(owner)
    here = this_process()
    if holder is None or (holder.host, holder.namespace) != (here.host, here.namespace):
        return None
    if holder.namespace == "-":
        return None  # no namespace id: PIDs cannot be trusted to mean the same process
    return _start_token(holder.pid) == holder.started


def new_owner() -> str:
    """An owner id naming this host and process (for people and for `holder_alive`)."""
    return str(this_process())


class Lock(abc.ABC):
    """A held lock. Truthy; `release()` (or leaving the `with` block) gives it up.

    Until released, a heartbeat thread keeps it alive: a lock that is dropped without
    `release()` stays held until the process ends.
    """

    def __init__(self, name: str, owner: str, heartbeat_seconds: float) -> None:
        self.name = name
        self.owner = owner
        self.acquired_at = time.time()
        self._released = False
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._heartbeat_seconds = heartbeat_seconds
        self._thread: threading.Thread | None = None

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        state = "released" if self._released else "lost" if self.lost else "held"
        return f"<{type(self).__name__} {self.name!r} {state} by {self.owner}>"

    @property
    def lost(self) -> bool:
        """True when the lock may have passed to someone else (lease or connection lost)."""
        return self._lost.is_set()

    @property
    def held(self) -> bool:
        """True until released or lost."""
        return not self._released and not self.lost

    def _start_heartbeat(self) -> None:
        self._thread = threading.Thread(
            target=self._run_heartbeat, name=f"lock-heartbeat {self.name}", daemon=True
        )
        self._thread.start()

    def _run_heartbeat(self) -> None:
        while not self._stop.wait(self._heartbeat_seconds):
            with self._guard:
                if self._released:
                    return
                try:
                    alive = self._beat()
                except Exception as exc:  # a database error: the next beat may succeed
                    log.warning("lock %s: heartbeat failed: %s", self.name, exc)
                    alive = self._beat_failed()
            if not alive:
                log.error("lock %s: lost by %s", self.name, self.owner)
                self._lost.set()
                return

    def release(self) -> None:
        """Give the lock up; idempotent."""
        self._stop.set()
        with self._guard:
            if self._released:
                return
            self._released = True
            self._release()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    @abc.abstractmethod
    def _beat(self) -> bool:
        """Renew or check the lock; False when it is no longer ours."""

    def _beat_failed(self) -> bool:
        """Whether the lock may still be ours after `_beat` raised."""
        return True

    @abc.abstractmethod
    def _release(self) -> None:
        """Give the lock up in the database."""


class AdvisoryLock(Lock):
    """A PostgreSQL session-level advisory lock on a dedicated connection."""

    def __init__(
        self, name: str, owner: str, connection: Connection, key: int, check_seconds: float
    ) -> None:
        super().__init__(name, owner, heartbeat_seconds=check_seconds)
        self._connection = connection
        self._key = key

    def _beat(self) -> bool:
        # Checking also keeps the connection from looking idle to firewalls and timeouts.
        return bool(self._connection.execute(_HOLDS_ADVISORY, _split_key(self._key)).scalar())

    def _beat_failed(self) -> bool:
        # The connection is gone, and with it the lock.
        return False

    def _release(self) -> None:
        try:
            self._connection.execute(select(func.pg_advisory_unlock(self._key)))
        except Exception as exc:  # closing the connection frees the lock anyway
            log.warning("lock %s: unlock failed: %s", self.name, exc)
        finally:
            self._connection.close()


# pg_locks shows a bigint advisory key as two 32-bit halves: classid (high) and objid (low)
_HOLDS_ADVISORY = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = pg_backend_pid() AND objsubid = 1"
    " AND CAST(classid AS bigint) = :classid AND CAST(objid AS bigint) = :objid"
)


def _split_key(key: int) -> dict[str, int]:
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}


class LeaseLock(Lock):
    """A row in the `locks` table, renewed by a heartbeat before its lease runs out."""

    def __init__(self, name: str, owner: str, engine: Engine, lease_seconds: float) -> None:
        super().__init__(name, owner, heartbeat_seconds=lease_seconds / 3)
        self._engine = engine
        self._lease = lease_seconds
        self._renewed = time.time()

    def _beat(self) -> bool:
        now = time.time()
        with self._engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            result = connection.execute(
                update(LockRow)
                .where(LockRow.name == self.name, LockRow.owner == self.owner)
                .values(expires_at=now + self._lease)
            )
        if result.rowcount == 1:
            self._renewed = now
            return True
        return False

    def _beat_failed(self) -> bool:
        # Busy database: keep trying while the lease may still be ours.
        return time.time() < self._renewed + self._lease

    def _release(self) -> None:
        with self._engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
            connection.execute(
                delete(LockRow).where(LockRow.name == self.name, LockRow.owner == self.owner)
            )


def try_advisory_lock(
    engine: Engine, name: str, owner: str, check_seconds: float = DEFAULT_LEASE_SECONDS / 3
) -> AdvisoryLock | None:
    """Take the PostgreSQL advisory lock `name` on a new connection of `engine`, or None.
    Every `check_seconds` a heartbeat checks that the connection (and so the lock) lives."""
    key = advisory_key(name)
    # autocommit: the connection must not sit "idle in transaction" for the whole apply
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        acquired = bool(connection.execute(select(func.pg_try_advisory_lock(key))).scalar())
    except BaseException:
        connection.close()
        raise
    if not acquired:
        connection.close()
        return None
    lock = AdvisoryLock(name, owner, connection, key, check_seconds)
    lock._start_heartbeat()
    return lock


def try_lease_lock(engine: Engine, name: str, owner: str, lease_seconds: float) -> LeaseLock | None:
    """Take the leased lock `name` in the `locks` table, or None while another holds it."""
    now = time.time()
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        row = connection.execute(
            select(LockRow.owner, LockRow.expires_at).where(LockRow.name == name)
        ).first()
        if row is None:
            connection.execute(
                insert(LockRow).values(
                    name=name, owner=owner, acquired_at=now, expires_at=now + lease_seconds
                )
            )
        elif row.owner == owner or row.expires_at <= now or holder_alive(row.owner) is False:
            if row.owner != owner:
                why = "lease expired" if row.expires_at <= now else "holder is gone"
                log.warning("lock %s: %s (%s); taking it over", name, why, row.owner)
            connection.execute(
                update(LockRow)
                .where(LockRow.name == name)
                .values(owner=owner, acquired_at=now, expires_at=now + lease_seconds)
            )
        else:
            return None
    lock = LeaseLock(name, owner, engine, lease_seconds)
    lock._start_heartbeat()
    return lock


def wait_for(
    attempt: Callable[[], Lock | None], wait_seconds: float, poll_seconds: float = 0.2
) -> Lock | None:
    """Call `attempt` until it returns a lock or `wait_seconds` have passed."""
    deadline = time.monotonic() + wait_seconds
    while True:
        lock = attempt()
        if lock is not None or time.monotonic() >= deadline:
            return lock
        time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))
