"""Bounds on what a client may send before a request reaches the application.

waitress reads the whole request (head and body) before it calls the app, so its limits are
the first line of defence:

- `max_request_body_size` is the app's largest route limit (`MetalformApp.max_body`, the
  webhooks' 5 MiB) instead of waitress's 1 GiB: a bigger `Content-Length` is refused at once,
  and a chunked body is cut off there;
- `max_request_header_size` is 64 KiB (request line and headers) instead of 256 KiB;
- a chunk-size line or a trailer may be at most `MAX_CHUNK_LINE` bytes. waitress's
  `ChunkedReceiver` appends every read to an unterminated chunk-size line and scans it all
  again for CRLF, so a line that never ends costs time quadratic in its length (8 MB: 4 s
  of CPU). `GuardedChunkedReceiver` refuses the request (400, connection closed) as soon as
  the line outgrows the bound, so no scan is longer than the bound plus one read.

Refusals made here come out in the API's JSON error shape, not waitress's plain text.
"""

from __future__ import annotations

import json
from typing import Any

import waitress
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.receiver import ChunkedReceiver
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask
from waitress.utilities import BadRequest

from metalform.api.app import MetalformApp

MAX_CHUNK_LINE = 4 * 1024
"""A chunk-size line is a hex number and extensions; a trailer, a few headers."""
MAX_REQUEST_HEAD = 64 * 1024
"""The request line and headers: a bearer token and a few forge headers fit many times."""

_CODES = {
    400: "BAD_REQUEST",
    413: "PAYLOAD_TOO_LARGE",
    431: "HEADERS_TOO_LARGE",
    500: "INTERNAL_ERROR",
    501: "NOT_IMPLEMENTED",
}


class GuardedChunkedReceiver(ChunkedReceiver):  # type: ignore[misc]
    """waitress's chunked-body receiver with a bound on the chunk-size and trailer lines."""

    control_line: bytes
    trailer: bytes

    def received(self, s: bytes) -> int:
        consumed: int = super().received(s)
        # What is still unterminated after this read is all that gets rescanned next time.
        if len(self.control_line) > MAX_CHUNK_LINE or len(self.trailer) > MAX_CHUNK_LINE:
            self.control_line = self.trailer = b""
            self.error = BadRequest(
                f"a chunk-size or trailer line is longer than {MAX_CHUNK_LINE} bytes"
            )
            self.all_chunks_received = True
        return consumed


class GuardedParser(HTTPRequestParser):  # type: ignore[misc]
    """waitress's request parser, receiving chunked bodies with `GuardedChunkedReceiver`."""

    body_rcv: Any

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if self.chunked:
            self.body_rcv = GuardedChunkedReceiver(self.body_rcv.buf)


class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's answer to a request it refuses itself, in the API's JSON error shape."""

    def execute(self) -> None:
        error = self.request.error
        body = json.dumps(
            {
                "error": {
                    "code": _CODES.get(error.code, "BAD_REQUEST"),
                    "message": f"{error.reason}: {error.body}",
                    "details": {},
                }
            }
        ).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class GuardedChannel(HTTPChannel):  # type: ignore[misc]
    parser_class = GuardedParser
    error_task_class = JsonErrorTask


def create_server(app: MetalformApp, **options: Any) -> BaseWSGIServer:
    """`waitress.create_server` with the bounds above (`options` as waitress takes them)."""
    # waitress refuses a Content-Length >= max_request_body_size: one more than the limit
    server = waitress.create_server(
        app,
        max_request_body_size=app.max_body + 1,
        max_request_header_size=MAX_REQUEST_HEAD,
        **options,
    )
    if not isinstance(server, BaseWSGIServer):  # several sockets: one listen address only
        raise TypeError("one listen address is supported")
    server.channel_class = GuardedChannel
    return server
