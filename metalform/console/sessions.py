"""Console sessions: random ids mapped to who signed in, with an expiry and a CSRF token.

Kept in the server's memory: a restart signs everyone out, which is the safe failure. The
cookie holds only the id; the id is stored digested, so a memory dump holds no usable id.
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

COOKIE = "metalform_session"
LOGIN_COOKIE = "metalform_login"
"""A random value the sign-in form repeats: a cross-site page cannot sign someone in."""
MAX_SESSIONS = 10_000
MAX_FAILURES = 10
"""Failed sign-ins from one address within `FAILURE_WINDOW` seconds before it must wait."""
FAILURE_WINDOW = 60.0
MAX_ADDRESSES = 10_000


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires: float


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


class Sessions:
    """The sessions of one server process."""

    def __init__(
        self,
        lifetime: float,
        *,
        secure: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime = lifetime
        self.secure = secure
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self.max_failures = MAX_FAILURES
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> tuple[str, Session]:
        """A new session: its id (for the cookie only) and what it holds."""
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), self.clock() + self.lifetime)
        with self._lock:
            self._sessions[_key(session_id)] = session
            while len(self._sessions) > MAX_SESSIONS:  # the oldest sign-in goes first
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of an id, or None (unknown or expired)."""
        if not session_id:
            return None
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires <= self.clock():
                del self._sessions[key]
                return None
        return session

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
            with self._lock:
                self._sessions.pop(_key(session_id), None)

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
