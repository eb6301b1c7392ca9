"""Workarounds for pyghmi 1.6 defects that stall IPMI sessions of a process under packet loss.

pyghmi runs all sessions of a process on shared state: one I/O thread receives every answer,
and two process-wide locks guard its tables of sessions waiting for an answer and of sessions
kept alive. Under packet loss (retransmissions, logins started again) two defects of that
shared state stop all sessions, not just the one that lost a packet; every BMC whose request
is then in flight is reported Unreachable:

- a lock-order deadlock. Sending takes the keepalive lock, then the waiting lock
  (`send_payload` -> `_xmit_packet`); a retransmission takes the waiting lock, then the
  keepalive lock (`wait_for_rsp` and `awaitresponse` call `_timedout` -> `send_payload` while
  they hold the waiting lock). Two threads doing one each hold one lock forever, and no
  session of the process sends again;
- a blocking receive. `_io_sendto` makes the shared socket blocking before each send, from
  whichever thread sends, while the I/O thread makes it non-blocking, then reads it until it
  is empty. A send between the two leaves the I/O thread blocked in `recvfrom` on that socket
  until some packet arrives there (up to 64 BMCs share a socket: once they are done, never),
  and no answer on any other socket is read meanwhile.

`install()` makes both locks one (re-entrant, so no order between them can deadlock; each is
held for a table update or a send) and replaces `_io_sendto` with a send that never changes the
socket's mode.

One lock makes a third defect, a lost wake-up, frequent (rare with two). A thread waiting for
its session's answer sleeps until the answer's packet arrives or its retransmission timer
(0.5 to 1 s) expires. Another thread may take the packet off the session's queue first, then
wait for the lock (`_parse_payload`) before it hands the answer over; the woken owner finds
nothing yet and sleeps again, until its timer: 30 lossless BMCs were planned in 1.4 s instead
of 0.5 s, with no packet late. So a wait for one BMC's answer looks again at least every
`WAKE_INTERVAL`.

Only module attributes are replaced, which pyghmi looks up at each call.
"""

from __future__ import annotations

import select
from typing import Any

from pyghmi.ipmi.private import session as ipmi_session

SEND_WAIT = 0.05
"""Seconds a send waits for room in a full socket buffer before the packet is dropped (pyghmi
retransmits it): the sender holds pyghmi's process-wide lock."""

WAKE_INTERVAL = 0.05
"""Longest sleep of a thread waiting for one BMC's answer before it looks again (see above)."""

_installed = False
_pyghmi_io_wait: Any = ipmi_session._io_wait


def sendto(sock: Any, packet: bytes, sockaddr: Any) -> None:
    """Send one datagram without touching the socket's blocking mode (see above).

    Like pyghmi's, never raises: a datagram that cannot leave is a lost packet, which the
    session's retransmission covers.
    """
    raw = getattr(sock, "fd", sock)  # pyghmi's eventlet wrapping keeps the socket in `fd`
    for attempt in (1, 2):
        try:
            raw.sendto(packet, sockaddr)
            return
        except BlockingIOError:
            if attempt == 1:
                select.select((), (raw,), (), SEND_WAIT)
        except OSError:
            return


def io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    """pyghmi's wait, at most WAKE_INTERVAL when it waits for one BMC's packets.

    pyghmi's callers loop until their answer is there or their own deadline passed, so an
    early return costs one more look.
    """
    if myaddr is not None:
        timeout = min(timeout, WAKE_INTERVAL)
    _pyghmi_io_wait(timeout, myaddr, evq)


def install() -> None:
    """Apply the workarounds to pyghmi's session module (idempotent)."""
    global _installed
    if _installed:
        return
    ipmi_session.WAITING_SESSIONS = ipmi_session.KEEPALIVE_SESSIONS
    ipmi_session._io_sendto = sendto
    ipmi_session._io_wait = io_wait
    _installed = True
