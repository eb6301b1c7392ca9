"""Many IPMI BMCs in one process: pyghmi's BMC server class on consecutive UDP ports.

    python -m metalform.lab.ipmi_farm --count 200 --port 17000 --latency 0.05

Each BMC keeps its own power state and boot device and answers the IPMI 2.0 LAN protocol
(RMCP+ sessions, RAKP, chassis status and control, boot options, device id) that
providers/ipmi speaks. Every packet a BMC sends leaves after `--latency` seconds (plus up to
`--jitter`), without holding up the other BMCs, and `--loss` drops that share of them, so a
client's retransmissions are exercised. The password is read from the environment variable
named by `--password-env`, never from the command line.

It runs in a process of its own: pyghmi keeps its sessions, client or server, in one
process-wide table, which a client in the same process would share. When the BMCs listen it
prints one JSON line (`{"ready": true, "ports": [first, last]}`); on SIGTERM or SIGINT it
prints the packet counts (`{"sent": N, "dropped": N, "received": N}`) and exits.

Not modelled: SOL, SEL/SDR, cipher suites other than 3, IPMI 1.5, Kg keys, user management.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from typing import Any

from pyghmi.ipmi import bmc as ipmi_bmc
from pyghmi.ipmi.private import serversession
from pyghmi.ipmi.private import session as ipmi_session

from providers.ipmi import pyghmi_fixes

HMAC_SHA1 = 1
RMCP_INVALID_AUTH_ALGORITHM = 0x11


class FarmSession(serversession.ServerSession):  # type: ignore[misc]
    """Refuses RAKP algorithms other than HMAC-SHA1, which pyghmi's server always answers with.

    pyghmi's client proposes SHA-256 first and fails on a SHA-1 answer; told no (RMCP+ status
    0x11) it falls back to SHA-1, as it does with a real BMC that lacks SHA-256.
    """

    def create_open_session_response(self, request: bytearray) -> bytearray:
        if request[12] & 0x3F != HMAC_SHA1:
            self.clientsessionid = request[4:8]
            return bytearray([request[0], RMCP_INVALID_AUTH_ALGORITHM, 0, 0]) + request[4:8]
        response: bytearray = super().create_open_session_response(request)
        return response

    def _handle_ipmi_packet(self, data: bytearray, sockaddr: Any = None, qent: Any = None) -> Any:
        """A new login from the client's address and port: forget this BMC's session only.

        pyghmi's server forgets the sessions of every BMC of the process for that client
        address and port. A client shares one UDP port among up to 64 BMCs, so one session
        logging in again (after a lost packet) cut off dozens of other BMCs' sessions, whose
        requests then went unanswered until they logged in again too: a BMC of its own (one
        process each) forgets its own session only.
        """
        ipmi15, sequence_and_session = data[4] in (0, 2), bytes(data[5:13])
        if not (ipmi15 and sequence_and_session == bytes(8) and qent is not None):
            return super()._handle_ipmi_packet(data, sockaddr, qent)
        handlers = ipmi_session.Session.bmc_handlers.get(sockaddr, {})
        if handlers.get(self.bmc.port) is self:
            del handlers[self.bmc.port]
        self.bmc.pktqueue.append(qent)
        self.bmc.process_pktqueue()
        return None

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        """A stray packet queued for this session (a retransmission after a loss): dropped,
        as the client retransmits. pyghmi's server session lacks this method."""
        del data, sockaddr


class FarmBmc(ipmi_bmc.Bmc):  # type: ignore[misc]
    """One BMC: a host whose power and boot device change as the IPMI requests say."""

    def __init__(self, authdata: dict[str, str], port: int, address: str) -> None:
        super().__init__(authdata, port=port, address=address)
        self.power = "off"
        self.bootdevice = "default"

    def get_power_state(self) -> str:
        return self.power

    def power_on(self) -> None:
        self.power = "on"

    def power_off(self) -> None:
        self.power = "off"

    def power_shutdown(self) -> None:
        self.power = "off"

    def power_reset(self) -> None:
        self.power = "on"

    def power_cycle(self) -> None:
        self.power = "on"

    def get_boot_device(self) -> str:
        return self.bootdevice

    def set_boot_device(self, bootdevice: str) -> None:
        self.bootdevice = bootdevice


class Wire:
    """Delays and drops the packets the BMCs send, in one sender thread (a timer queue)."""

    def __init__(self, latency: float, jitter: float, loss: float, seed: int) -> None:
        self.latency, self.jitter, self.loss = latency, jitter, loss
        self.random = random.Random(seed)
        self.queue: list[tuple[float, int, Any, bytes, Any]] = []
        self.cond = threading.Condition()
        self.counter = 0
        self.sent = self.dropped = 0
        self.send = ipmi_session._io_sendto

    def sendto(self, sock: Any, packet: bytes, sockaddr: Any) -> None:
        with self.cond:
            if self.random.random() < self.loss:
                self.dropped += 1
                return
            due = time.monotonic() + self.latency + self.random.uniform(0, self.jitter)
            self.counter += 1
            heapq.heappush(self.queue, (due, self.counter, sock, bytes(packet), sockaddr))
            self.cond.notify()

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.queue or self.queue[0][0] > time.monotonic():
                    timeout = self.queue[0][0] - time.monotonic() if self.queue else None
                    self.cond.wait(timeout)
                _, _, sock, packet, sockaddr = heapq.heappop(self.queue)
                self.sent += 1
            self.send(sock, packet, sockaddr)


def free_port_range(address: str, count: int, tries: int = 50) -> int:
    """The first of `count` consecutive UDP ports free on `address` (probed, then released)."""
    for _ in range(tries):
        base = random.randrange(20000, 60000 - count)
        probes: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(sock)
                sock.bind((address, port))
            return base
        except OSError:
            continue
        finally:
            for sock in probes:
                sock.close()
    raise SystemExit(f"no {count} consecutive free UDP ports on {address}")


def _exit_at_eof(stop: Any) -> None:
    """Stop when the parent closes our stdin (or dies): never outlive the benchmark."""
    sys.stdin.read()
    stop(signal.SIGTERM, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=17000, help="port of the first BMC (0: any free range)"
    )
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password-env", default="IPMI_FARM_PASSWORD")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per packet")
    parser.add_argument("--jitter", type=float, default=0.0, help="up to this much more")
    parser.add_argument("--loss", type=float, default=0.0, help="share of packets dropped")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--exit-with-stdin", action="store_true", help="exit when stdin closes (the parent died)"
    )
    args = parser.parse_args(argv)
    if not args.address.startswith("127."):
        parser.error("the farm listens on loopback only (127.0.0.0/8)")
    password = os.environ.get(args.password_env)
    if not password:
        parser.error(f"set the BMC password in ${args.password_env}")
    if args.port == 0:
        args.port = free_port_range(args.address, args.count)
    serversession.ServerSession = FarmSession
    pyghmi_fixes.install()  # before the wire takes pyghmi's send function
    wire = Wire(args.latency, args.jitter, args.loss, args.seed)
    if args.latency or args.jitter or args.loss:
        ipmi_session._io_sendto = wire.sendto
        threading.Thread(target=wire.run, name="wire", daemon=True).start()
    received = [0]
    handle = serversession.IpmiServer.sessionless_data

    def counted(self: Any, data: bytes, sockaddr: Any) -> None:
        received[0] += 1
        handle(self, data, sockaddr)

    serversession.IpmiServer.sessionless_data = counted
    users = {args.user: password}
    for i in range(args.count):
        FarmBmc(users, port=args.port + i, address=args.address)

    stopping = threading.Lock()

    def stop(signum: int, frame: Any) -> None:
        if not stopping.acquire(blocking=False):
            return  # a signal and the end of stdin at once: the first one reports
        stats = {"sent": wire.sent, "dropped": wire.dropped, "sessionless": received[0]}
        with contextlib.suppress(OSError):  # the parent may be gone, and our stdout with it
            print(json.dumps(stats), flush=True)
        os._exit(0)  # pyghmi's I/O thread never returns

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.exit_with_stdin:
        threading.Thread(target=_exit_at_eof, args=(stop,), name="stdin", daemon=True).start()
    print(json.dumps({"ready": True, "ports": [args.port, args.port + args.count - 1]}), flush=True)
    while True:
        ipmi_session.Session.wait_for_rsp(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
