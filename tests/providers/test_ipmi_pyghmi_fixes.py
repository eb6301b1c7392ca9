"""The pyghmi workarounds the IPMI client installs (providers.ipmi.pyghmi_fixes)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from pyghmi.ipmi.private import session as ipmi_session
from pyghmi.ipmi.private import util

import providers.ipmi.client  # noqa: F401  (installs the workarounds)


def _take(first: str, then: str, barrier: threading.Barrier) -> None:
    """Take pyghmi's lock `first`, meet the other thread, then take `then`, as pyghmi does."""
    with util.protect(getattr(ipmi_session, first)):
        # With one lock, the other thread cannot get in while this one holds it: no meeting.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=0.5)
        with util.protect(getattr(ipmi_session, then)):
            pass


def test_pyghmi_lock_orders_cannot_deadlock() -> None:
    # send_payload holds KEEPALIVE_SESSIONS and takes WAITING_SESSIONS (_xmit_packet); a
    # retransmission from wait_for_rsp or awaitresponse holds WAITING_SESSIONS and takes
    # KEEPALIVE_SESSIONS (_timedout -> send_payload). Both at once must not block for ever.
    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(target=_take, args=order, daemon=True)
        for order in (
            ("KEEPALIVE_SESSIONS", "WAITING_SESSIONS", barrier),
            ("WAITING_SESSIONS", "KEEPALIVE_SESSIONS", barrier),
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert not any(t.is_alive() for t in threads), "pyghmi's two locks deadlocked"


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def test_sending_leaves_the_shared_socket_non_blocking(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    # pyghmi's I/O thread reads every socket as non-blocking; a send that made it blocking
    # would leave that thread waiting in recvfrom on a quiet socket.
    sender, receiver = udp_pair
    sender.setblocking(False)
    ipmi_session._io_sendto(sender, b"\x06\x00\xff\x07", receiver.getsockname())
    assert receiver.recvfrom(64)[0] == b"\x06\x00\xff\x07"
    assert not sender.getblocking()


def test_a_send_that_cannot_leave_is_dropped_not_raised(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, _ = udp_pair
    ipmi_session._io_sendto(sender, b"x" * 70000, ("127.0.0.1", 9))  # too long for UDP
