"""Talks IPMI to BMCs through pyghmi, safely from many threads and within a time limit.

pyghmi's threading model: every `Session` shares one process-wide I/O thread and a pool of UDP
sockets; a synchronous call (`Command.xraw_command`) pumps the shared event loop from the
calling thread until its own answer arrives. Sessions are cached by pyghmi per (host, user,
password, port) and one session runs one command at a time. pyghmi sets its own timeouts
(about 4.5 s before it declares a BMC absent) and has no per-call deadline.

So this client:
- keeps one `Command` per BMC and credential, and lets one thread at a time use it (a lock
  per session); different BMCs are served concurrently;
- runs each request in a short-lived daemon thread and waits at most `timeout` seconds for it,
  so a dead BMC costs the caller `timeout`, not pyghmi's retry schedule. A request whose caller
  gave up before it got the session is dropped, never sent late (a power action must not
  happen after Metalform reported it failed);
- retires a session whose request was given up: pyghmi keeps retrying it (about 20 s,
  resending the command, then logging in again), and would hand that same stuck session to any
  new Command for the BMC. The next session logs in under another of three equivalent pyghmi
  cache keys, one no stuck session holds: without a BMC key (Kg), IPMI 2.0 uses the password as
  Kg, so `kg=None`, `kg=password` and `kg=password.encode()` derive the same session keys while
  pyghmi caches them apart. A BMC that comes back after a restart is therefore answered at the
  next request, not 20 s later;
- installs the workarounds of providers.ipmi.pyghmi_fixes, without which a lost packet can stall
  every session of the process (a lock-order deadlock, a blocking receive);
- works around a pyghmi 1.6 bug: `Session.__new__` registers a login under a key of `str`
  user and password, and removes it under `bytes` ones, so the entry stays; once that session
  breaks or logs out, every later Command for the same BMC and credential gets the dead
  session back ("Session no longer connected"). The client drops such a dead entry before it
  logs in again (`_forget_dead_session`);
- turns every failure into a ProviderError (authentication, unreachable, BMC busy, refused)
  whose message names the endpoint and never holds a secret.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pyghmi import exceptions as pyghmi_exc
from pyghmi.ipmi import command as ipmi_command
from pyghmi.ipmi.private import session as ipmi_session

from providers.ipmi import mapping, pyghmi_fixes
from reconciler.errors import (
    AuthenticationError,
    PermanentError,
    ProviderError,
    TemporaryError,
    UnreachableError,
)
from reconciler.secrets import REDACTOR, ResolvedCredential

log = logging.getLogger("metalform.providers.ipmi")
pyghmi_fixes.install()
T = TypeVar("T")

LOGOUT_TIMEOUT = 2.0
# pyghmi's messages for a rejected login (RAKP and session activation failures).
_AUTH_MARKERS = (
    "password",
    "unauthorized name",
    "unauthorized role",
    "invalid username",
    "invalid role",
    "integrity code",
    "unauthorized guid",
)
# pyghmi's messages when the BMC stopped answering.
_NO_ANSWER_MARKERS = ("timeout", "no longer connected", "failed to initialize", "disconnected")


@dataclass(frozen=True)
class BmcTarget:
    """One BMC and the credential to log in with."""

    host: str
    port: int
    credential: ResolvedCredential

    @property
    def endpoint(self) -> str:
        return mapping.endpoint(self.host, self.port)

    @property
    def username(self) -> str:
        return self.credential.username or ""

    @property
    def key(self) -> tuple[str, int, str, str]:
        """Identity of a session: a digest stands for the password, never the value."""
        digest = hashlib.sha256(self.credential.secret.reveal().encode()).hexdigest()
        return (self.host, self.port, self.username, digest)


@dataclass
class _Session:
    variant: int = 0
    """Which equivalent Kg this session logs in with (`_kg`)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    command: Any = None
    """The logged-in pyghmi Command, or None until the first request (and after a failure)."""
    device: mapping.DeviceId | None = None


KG_VARIANTS = 3


def _kg(target: BmcTarget, variant: int) -> str | bytes | None:
    """The BMC key to log in with: None and the password are the same key (see above)."""
    if variant == 0:
        return None
    password = target.credential.secret.reveal()
    return password if variant == 1 else password.encode()


def _forget_dead_session(target: BmcTarget, kg: str | bytes | None) -> None:
    """Drop pyghmi's stale registration of a dead session for this BMC and credential."""
    key = (target.host, target.username, target.credential.secret.reveal(), target.port, kg)
    initting = getattr(ipmi_session.Session, "initting_sessions", None)
    if not isinstance(initting, dict):
        return  # a pyghmi without the cache: nothing to work around
    stale = initting.get(key)
    # A login still in progress (another thread) is not dead: keep it. One the BMC refused
    # (a wrong password: RAKP failed) is, though pyghmi leaves it registered: a login after
    # the BMC's password changed (a rotation) would get that refusal back.
    refused = getattr(stale, "sessioncontext", None) == "FAILED"
    if stale is not None and (getattr(stale, "broken", False) or refused):
        initting.pop(key, None)


def _login(target: BmcTarget, variant: int) -> Any:
    """A logged-in pyghmi Command for the target.

    pyghmi races when logins fail on several BMCs at once (a rotation probing the new secret):
    a thread can see its session broken before the reason is stored, and gets an
    AttributeError (`errormsg`) instead of the refusal. The session is broken by then, so a
    second attempt logs in afresh and gets the real answer.
    """
    kg = _kg(target, variant)
    for attempt in (1, 2):
        _forget_dead_session(target, kg)
        try:
            return ipmi_command.Command(
                bmc=target.host,
                userid=target.username,
                password=target.credential.secret.reveal(),
                port=target.port,
                kg=kg,
            )
        except AttributeError as exc:
            if attempt == 2 or "errormsg" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _parse(parser: Callable[[bytes], T], data: bytes, target: BmcTarget, what: str) -> T:
    """Decode an answer; one that does not follow the specification is a PermanentError."""
    try:
        return parser(data)
    except ValueError as exc:
        raise PermanentError(f"{target.endpoint}: {what}: unexpected answer: {exc}") from exc


class _Abandoned(Exception):
    """The caller stopped waiting before the request got its session: it was not sent."""


def _text(exc: BaseException) -> str:
    message = str(exc) if str(exc) not in ("", "None") else ""
    return REDACTOR(message)


def classify(exc: BaseException, target: BmcTarget, what: str) -> ProviderError:
    """Turn whatever pyghmi or the network raised into a ProviderError for this endpoint."""
    if isinstance(exc, ProviderError):
        return exc
    endpoint = target.endpoint
    message = _text(exc)
    lowered = message.lower()
    if isinstance(exc, socket.gaierror) or "unable to transmit" in lowered:
        return UnreachableError(endpoint=endpoint, cause=f"cannot resolve host {target.host}")
    if isinstance(exc, pyghmi_exc.IpmiException):
        code = getattr(exc, "ipmicode", 0) or 0
        if any(marker in lowered for marker in _AUTH_MARKERS):
            return AuthenticationError(
                f"{endpoint} refused the credentials of {target.credential.name}: {message}"
            )
        if "insufficient resources" in lowered:
            return TemporaryError(f"{endpoint} is busy: {message}", retry_after=2.0)
        if not message or any(marker in lowered for marker in _NO_ANSWER_MARKERS):
            return UnreachableError(endpoint=endpoint, cause="no answer to IPMI (timed out)")
        if code in mapping.TEMPORARY_COMPLETION_CODES:
            reason = mapping.TEMPORARY_COMPLETION_CODES[code]
            return TemporaryError(f"{endpoint}: {what}: BMC answered {reason} (0x{code:02X})")
        detail = f"{message} (completion code 0x{code:02X})" if code else message
        return PermanentError(f"{endpoint}: {what} failed: the BMC answered {detail}")
    if isinstance(exc, OSError):
        return UnreachableError(endpoint=endpoint, cause=exc.strerror or type(exc).__name__)
    # pyghmi can fail in its packet parsing (struct.error, IndexError, ...): report it as one
    # line instead of letting a traceback escape.
    return PermanentError(
        f"{endpoint}: {what} failed in the IPMI client: {type(exc).__name__}: {message}"
    )


class IpmiClient:
    """IPMI requests to any number of BMCs, each within `timeout` seconds."""

    def __init__(
        self,
        timeout: float,
        slot: Callable[[str], AbstractContextManager[None]] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.timeout = timeout
        self._slot = slot or (lambda _endpoint: nullcontext())
        self._sessions: dict[tuple[str, int, str, str], _Session] = {}
        self._retired: dict[tuple[str, int, str, str], list[_Session]] = {}
        self._lock = threading.Lock()

    # -- requests --------------------------------------------------------------------------

    def chassis_status(self, target: BmcTarget) -> mapping.ChassisStatus:
        """Get Chassis Status: power state and power faults."""
        what = "read the power state"
        data = self._raw(target, what, netfn=0x00, command=0x01)
        return _parse(mapping.ChassisStatus.parse, data, target, what)

    def boot_flags(self, target: BmcTarget) -> mapping.BootFlags:
        """Get System Boot Options, parameter 5 (boot flags)."""
        what = "read the boot flags"
        data = self._raw(target, what, netfn=0x00, command=0x09, data=(5, 0, 0))
        return _parse(mapping.BootFlags.parse, data, target, what)

    def device_id(self, target: BmcTarget) -> mapping.DeviceId:
        """Get Device ID, asked once per session: it does not change while the BMC runs."""
        session = self._session(target)
        if session.device is None:
            what = "read the device id"
            data = self._raw(target, what, netfn=0x06, command=0x01)
            session.device = _parse(mapping.DeviceId.parse, data, target, what)
        return session.device

    def chassis_control(self, target: BmcTarget, control: mapping.ChassisControl) -> None:
        """Chassis Control: power on, off, soft-off, reset."""
        what = f"chassis control {control.name.lower().replace('_', ' ')}"
        self._raw(target, what, netfn=0x00, command=0x02, data=(int(control),))

    def set_boot(self, target: BmcTarget, device: str, persistent: bool) -> None:
        """Set the boot override through pyghmi (`default` clears it)."""

        def call(cmd: Any) -> None:
            result = cmd.set_bootdev(device, persist=persistent)
            if isinstance(result, dict) and "error" in result:
                raise pyghmi_exc.IpmiException(result["error"])

        self.call(target, f"set the boot device to {device}", call)

    def _raw(
        self, target: BmcTarget, what: str, *, netfn: int, command: int, data: tuple[int, ...] = ()
    ) -> bytes:
        def call(cmd: Any) -> bytes:
            response = cmd.xraw_command(netfn=netfn, command=command, data=data)
            return bytes(response["data"])

        return self.call(target, what, call)

    def logged_in(self, target: BmcTarget) -> tuple[BmcTarget, str]:
        """The target whose secret the BMC takes, and which one: `current` (the Credential's
        secret) or, during a rotation, `previous` (its previous secret: a rotation to finish).
        """
        previous = target.credential.previous
        if previous is None:
            return target, "current"
        try:
            self.chassis_status(target)
            return target, "current"
        except AuthenticationError:
            pass
        credential = target.credential
        old = replace(
            target,
            credential=ResolvedCredential(
                name=credential.name, username=credential.username, secret=previous
            ),
        )
        try:
            self.chassis_status(old)
        except AuthenticationError:
            raise AuthenticationError(
                f"authentication failed: {target.endpoint} refused both the secret and the "
                f"previous secret of Credential/{credential.name}"
            ) from None
        return old, "previous"

    # -- the machinery ---------------------------------------------------------------------

    def _session(self, target: BmcTarget) -> _Session:
        with self._lock:
            session = self._sessions.get(target.key)
            if session is None:
                session = self._sessions[target.key] = _Session()
            return session

    def _retire(self, target: BmcTarget, session: _Session) -> None:
        """Stop using a session whose request was given up; the next one logs in afresh."""
        with self._lock:
            if self._sessions.get(target.key) is not session:
                return  # another caller retired it already
            # Retired sessions whose request still runs (holds the lock) keep their Kg busy.
            stuck = [s for s in self._retired.get(target.key, []) if s.lock.locked()]
            stuck.append(session)
            self._retired[target.key] = stuck
            busy = {s.variant for s in stuck}
            free = [v for v in range(KG_VARIANTS) if v not in busy]
            variant = free[0] if free else (session.variant + 1) % KG_VARIANTS
            self._sessions[target.key] = _Session(variant=variant)

    def call(self, target: BmcTarget, what: str, fn: Callable[[Any], T]) -> T:
        """Run `fn(command)` on the BMC's session, within the timeout; ProviderError on failure."""
        session = self._session(target)
        abandoned = threading.Event()
        future: Future[T] = Future()

        def work() -> None:
            if not session.lock.acquire(timeout=self.timeout):
                future.set_exception(_Abandoned())
                return
            try:
                if abandoned.is_set():
                    future.set_exception(_Abandoned())
                    return
                if session.command is None:
                    session.command = _login(target, session.variant)
                    session.device = None
                future.set_result(fn(session.command))
            except BaseException as exc:  # reported to the caller, never raised in this thread
                if (
                    not isinstance(exc, pyghmi_exc.IpmiException)
                    or getattr(exc, "ipmicode", 0) == 0
                ):
                    # Login or transport failure: log in afresh next time.
                    session.command = None
                future.set_exception(exc)
            finally:
                session.lock.release()

        with self._slot(target.endpoint):
            thread = threading.Thread(target=work, name=f"ipmi {target.endpoint}", daemon=True)
            thread.start()
            try:
                return future.result(timeout=self.timeout)
            except TimeoutError:
                abandoned.set()
                self._retire(target, session)
                raise UnreachableError(
                    endpoint=target.endpoint,
                    cause=f"no answer to IPMI within {self.timeout:g}s ({what})",
                ) from None
            except _Abandoned:
                raise UnreachableError(
                    endpoint=target.endpoint,
                    cause=f"an earlier request is still waiting for an answer ({what})",
                ) from None
            except Exception as exc:  # not KeyboardInterrupt: Ctrl-C must stay Ctrl-C
                raise classify(exc, target, what) from exc

    # -- the end ---------------------------------------------------------------------------

    def close(self) -> None:
        """Log out of every session (best effort, bounded in time), freeing BMC session slots."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._retired.clear()
        threads = []
        for session in sessions:
            thread = threading.Thread(
                target=self._logout, args=(session,), name="ipmi logout", daemon=True
            )
            thread.start()
            threads.append(thread)
        # One deadline for all: joined one by one with a timeout each, 200 BMCs that stopped
        # answering would hold the caller for 200 x LOGOUT_TIMEOUT.
        deadline = time.monotonic() + 2 * LOGOUT_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def _logout(session: _Session) -> None:
        if not session.lock.acquire(timeout=LOGOUT_TIMEOUT):
            return
        try:
            if session.command is not None:
                session.command.ipmi_session.logout()
        except Exception as exc:  # the BMC may be gone already; nothing to clean up then
            log.debug("IPMI logout failed: %s", _text(exc))
        finally:
            session.command = None
            session.lock.release()
