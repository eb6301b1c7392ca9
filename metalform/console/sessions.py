"""Console sessions: random ids mapped to who signed in, with an expiry and a CSRF token.

Kept in the state store when the server has one, so every replica behind a load balancer
knows every sign-in (each replica keeps what it read for `CACHE_SECONDS`: a sign-out made on
another replica holds there within that); without a store, in this process's memory. The
cookie holds only the id; the id is stored digested, so neither a database nor a memory dump
holds a usable id. Failed sign-ins are counted per process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import falcon

from metalform.api.auth import Principal
from metalform.server.config import Role
from metalform.store import Store
from metalform.store.console_sessions import SessionRecord

COOKIE = "metalform_session"
LOGIN_COOKIE = "metalform_login"
"""A random value the sign-in form repeats: a cross-site page cannot sign someone in."""
MAX_SESSIONS = 10_000
MAX_FAILURES = 10
"""Failed sign-ins from one address within `FAILURE_WINDOW` seconds before it must wait."""
FAILURE_WINDOW = 60.0
MAX_ADDRESSES = 10_000
CACHE_SECONDS = 5.0
"""How long a replica trusts a session it read from the store without reading it again."""


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class Sessions:
    """The sign-ins of the console: in `store` when given (shared by replicas), else here."""

    def __init__(
        self,
        lifetime: float,
        *,
        secure: bool = False,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.lifetime = lifetime
        self.secure = secure
        self.store = store
        self.clock = clock
        self.wall_clock = wall_clock
        self._sessions: OrderedDict[str, tuple[Session, float]] = OrderedDict()
        """By digest: the session and, when it came from the store, when it was read."""
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self.max_failures = MAX_FAILURES
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> tuple[str, Session]:
        """A new session: its id (for the cookie only) and what it holds."""
        session_id = secrets.token_urlsafe(32)
        now = self.wall_clock()
        session = Session(principal, secrets.token_urlsafe(32), now + self.lifetime)
        key = _key(session_id)
        if self.store is not None:
            record = SessionRecord(
                key, principal.name, principal.role.value, session.csrf, session.expires
            )
            self.store.save_session(record, now=now)
        self._remember(key, session)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of an id, or None (unknown, expired or signed out)."""
        if not session_id:
            return None
        key = _key(session_id)
        now = self.wall_clock()
        with self._lock:
            found = self._sessions.get(key)
        if found is not None and self.store is not None and self.clock() - found[1] > CACHE_SECONDS:
            found = None  # read it again: another replica may have ended it
        if found is None and self.store is not None:
            record = self.store.load_session(key)
            if record is not None:
                principal = Principal(record.principal, Role(record.role))
                found = (Session(principal, record.csrf, record.expires_at), self.clock())
                self._remember(key, found[0])
        if found is None:
            with self._lock:
                self._sessions.pop(key, None)
            return None
        if found[0].expires <= now:
            self.end(session_id)
            return None
        return found[0]

    def _remember(self, key: str, session: Session) -> None:
        with self._lock:
            self._sessions[key] = (session, self.clock())
            self._sessions.move_to_end(key)
            while len(self._sessions) > MAX_SESSIONS:  # the oldest sign-in goes first
                self._sessions.popitem(last=False)

    def refused_for(self, address: str) -> float | None:
        """Seconds an address must wait before it may try to sign in again, or None.

        Tokens are long and random, so guessing one is hopeless anyway; this keeps a guessing
        loop from costing the server a hash per try, and makes it visible (HTTP 429). Behind a
        proxy every user shares its address: a guesser there makes the others wait a minute.
        """
        now = self.clock()
        with self._lock:
            failures = self._failures.get(address)
            if failures is None or len(failures) < self.max_failures:
                return None
            wait = failures[0] + FAILURE_WINDOW - now
            if wait <= 0:
                del self._failures[address]
                return None
            return wait

    def failed(self, address: str) -> None:
        """Count a failed sign-in of `address` (the oldest beyond the window forgotten)."""
        now = self.clock()
        with self._lock:
            failures = [t for t in self._failures.pop(address, []) if now - t < FAILURE_WINDOW]
            self._failures[address] = [*failures, now][-self.max_failures :]
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def end(self, session_id: str | None) -> None:
        if session_id:
            key = _key(session_id)
            with self._lock:
                self._sessions.pop(key, None)
            if self.store is not None:
                self.store.delete_session(key)

    def of(self, req: falcon.Request) -> Session | None:
        """The session a request's cookie names."""
        values = req.get_cookie_values(COOKIE) or []
        return self.get(values[0]) if values else None

    def principal(self, req: falcon.Request) -> Principal | None:
        """For `AuthMiddleware`: the API's GET routes accept a console session."""
        session = self.of(req)
        return session.principal if session is not None else None

    def set_cookie(self, resp: falcon.Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(
            name,
            value,
            max_age=max_age,
            path="/",
            secure=self.secure,
            http_only=True,
            same_site="Strict",
        )

    def clear_cookie(self, resp: falcon.Response, name: str) -> None:
        resp.unset_cookie(name, path="/", same_site="Strict")


def same(presented: str | None, expected: str) -> bool:
    """A constant-time comparison of a presented CSRF value."""
    return presented is not None and hmac.compare_digest(
        presented.encode("utf-8"), expected.encode("utf-8")
    )
