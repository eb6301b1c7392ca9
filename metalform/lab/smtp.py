"""A mail sink on loopback: an aiosmtpd SMTP server that keeps every message as a file.

`SmtpPeer` runs `python -m lab.smtp --state-dir DIR` in the background (127.0.0.1:2525 for
the lab, any free port for tests), keeps its pid and port in the state directory so another
process can `attach` and stop it, and stores each received message as `mail/<n>.eml` there.
`LoopbackController` is the in-process server both this sink and the test fixtures use; it
accepts port 0 and reports the port it got.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import ipaddress
import itertools
import json
import os
import signal
import smtplib
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from metalform.lab.process import ENDPOINT_FILE, ModulePeer

LAB_PORT = 2525
PID_FILE = "smtp.pid"
LOG_FILE = "smtp.log"
MAIL_DIR = "mail"
_MODULE = "metalform.lab.smtp"


class LoopbackController(Controller):
    """aiosmtpd's threaded controller, on a loopback address, with port 0 allowed."""

    def __init__(
        self, handler: Any, host: str = "127.0.0.1", port: int = 0, **smtp_options: Any
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the lab binds loopback addresses only, not {host}")
        super().__init__(handler, hostname=host, port=port, **smtp_options)

    def _trigger_server(self) -> None:
        # The stock controller connects to `self.port` to finish starting; with port 0 that
        # is the port the listening socket really got.
        server: Any = self.server
        self.port = int(server.sockets[0].getsockname()[1])
        super()._trigger_server()  # type: ignore[no-untyped-call]


class MailboxHandler:
    """Stores each message, as received, in a directory: `<n>.eml`, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem) for p in self.directory.glob("*.eml") if p.stem.isdigit()]
        self._numbers = itertools.count(max(existing, default=0) + 1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self._lock:
            number = next(self._numbers)
        path = self.directory / f"{number:06d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(content)
        tmp.rename(path)
        return "250 Message accepted for delivery"


def read_mailbox(directory: Path) -> list[EmailMessage]:
    """The messages in a mailbox directory, oldest first."""
    messages = []
    for path in sorted(directory.glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


class SmtpPeer(ModulePeer):
    """The lab's mail sink: a background process; all state lives in `state_dir`."""

    module = _MODULE
    noun = "mail sink"
    pid_file = PID_FILE
    log_file = LOG_FILE

    def __init__(
        self, state_dir: Path | str, *, host: str = "127.0.0.1", port: int = LAB_PORT
    ) -> None:
        super().__init__(state_dir, host=host, port=port)

    @property
    def url(self) -> str:
        """The sink as an smtp Provider's `url`."""
        return f"smtp://{self.host}:{self.port}"

    @property
    def mailbox(self) -> Path:
        return self.state_dir / MAIL_DIR

    def _probe(self) -> None:
        with smtplib.SMTP(self.host, self.port, local_hostname="localhost", timeout=2) as smtp:
            smtp.noop()

    def messages(self) -> list[EmailMessage]:
        """Every message received so far, oldest first."""
        return read_mailbox(self.mailbox)

    def clear(self) -> None:
        for path in self.mailbox.glob("*.eml"):
            path.unlink()


def serve(state_dir: Path, host: str, port: int) -> None:
    """Run the sink in this process until SIGTERM or SIGINT."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    controller = LoopbackController(MailboxHandler(state_dir / MAIL_DIR), host, port)
    controller.start()
    try:
        endpoint = {"host": host, "port": controller.port, "pid": os.getpid()}
        tmp = state_dir / (ENDPOINT_FILE + ".tmp")
        tmp.write_text(json.dumps(endpoint), encoding="utf-8")
        tmp.rename(state_dir / ENDPOINT_FILE)
        print(f"mail sink on {host}:{controller.port}", flush=True)
        while not stop.wait(0.5):  # a timed wait: the signal handler runs between waits
            pass
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lab.smtp", description=__doc__)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=LAB_PORT)
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("the lab binds loopback addresses only")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    serve(args.state_dir, args.host, args.port)


if __name__ == "__main__":
    main()
