"""Hostile requests against `metalform serve` over a real socket: each is refused with a 4xx
JSON error, bounded before the body is read where a bound is the answer, and the server
stays up (every test ends by asking `/healthz`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from metalform.api.body import DEFAULT_MAX_BODY, MAX_JSON_DEPTH
from metalform.server.http_limits import MAX_CHUNK_LINE, MAX_REQUEST_HEAD
from tests.api.live import Answer, Live, exchange, live_server
from tests.server.harness import TOKENS
from webhooks import MAX_BODY_BYTES

PLANNER = f"Authorization: Bearer {TOKENS['planner']}\r\n"
MB = 1024 * 1024


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    yield from live_server(tmp_path, monkeypatch)


def request(method: str, path: str, *, headers: str = "", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: metalform\r\n{headers}{length}Connection: close\r\n\r\n"
    ).encode("latin-1") + body


def refused(answer: Answer, status: int, code: str) -> dict[str, object]:
    """The answer is the API's JSON error with `status` and `code`; returns its error."""
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    error = json.loads(answer.body)["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


def still_up(live: Live) -> None:
    answer, _ = exchange(live, request("GET", "/healthz"))
    assert answer.status == 200 and json.loads(answer.body) == {"status": "ok"}


def test_deeply_nested_json_is_a_400(live: Live) -> None:
    deep = b"[" * 1000 + b"]" * 1000
    answer, _ = exchange(live, request("POST", "/api/v1/plans", headers=PLANNER, body=deep))
    error = refused(answer, 400, "BAD_REQUEST")
    assert f"more than {MAX_JSON_DEPTH} levels" in str(error["message"])
    # 100,000 levels do not fit in the route's limit: refused on the announced length
    bomb = b'{"revision":' * 100_000
    answer, _ = exchange(live, request("POST", "/api/v1/plans", headers=PLANNER, body=bomb))
    refused(answer, 413, "PAYLOAD_TOO_LARGE")
    still_up(live)


def test_an_oversized_body_is_refused_before_it_is_read(live: Live) -> None:
    # 200 MB announced, nothing sent: waitress refuses on the header alone
    head = request("POST", "/api/v1/plans", headers=PLANNER + f"Content-Length: {200 * MB}\r\n")
    answer, sent = exchange(live, head)
    refused(answer, 413, "PAYLOAD_TOO_LARGE")
    assert sent == len(head)
    # over the route's limit but under the server's: the token first, then the size
    body = b" " * (DEFAULT_MAX_BODY + 1)
    answer, _ = exchange(live, request("POST", "/api/v1/plans", body=body))
    refused(answer, 401, "UNAUTHORIZED")
    answer, _ = exchange(live, request("POST", "/api/v1/plans", headers=PLANNER, body=body))
    error = refused(answer, 413, "PAYLOAD_TOO_LARGE")
    assert error["details"] == {"limit": DEFAULT_MAX_BODY}
    answer, _ = exchange(
        live,
        request(
            "POST",
            "/api/v1/plans/x/apply",
            headers=f"Authorization: Bearer {TOKENS['operator']}\r\n",
            body=body,
        ),
    )
    refused(answer, 413, "PAYLOAD_TOO_LARGE")
    still_up(live)


def test_an_unauthenticated_upload_holds_nothing(live: Live) -> None:
    head = request("POST", "/api/v1/plans", headers=f"Content-Length: {200 * MB}\r\n")
    answer, sent = exchange(live, head, then=b"x" * 65536, repeat=200 * MB // 65536)
    refused(answer, 413, "PAYLOAD_TOO_LARGE")
    assert sent < 8 * MB, f"the server read {sent} bytes of a body it refused"
    still_up(live)


def test_a_chunked_body_is_bounded_too(live: Live) -> None:
    head = request("POST", "/api/v1/plans", headers=PLANNER + "Transfer-Encoding: chunked\r\n")
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    answer, sent = exchange(live, head, then=chunk, repeat=(MAX_BODY_BYTES // 0x10000) + 50)
    refused(answer, 413, "PAYLOAD_TOO_LARGE")
    assert sent < MAX_BODY_BYTES + 4 * MB
    still_up(live)


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "12, 12"])
def test_a_bad_content_length_is_a_400(live: Live, length: str) -> None:
    answer, _ = exchange(
        live, request("POST", "/api/v1/plans", headers=PLANNER + f"Content-Length: {length}\r\n")
    )
    refused(answer, 400, "BAD_REQUEST")
    still_up(live)


def test_an_unterminated_chunk_size_line_is_cut_short(live: Live) -> None:
    head = request("POST", "/api/v1/plans", headers=PLANNER + "Transfer-Encoding: chunked\r\n")
    before = live.loop_cpu_seconds()
    # 8 MB of a chunk-size line that never ends, 8 KiB at a time (waitress's read size)
    answer, sent = exchange(live, head, then=b"f" * 8192, repeat=1024)
    cpu = live.loop_cpu_seconds() - before
    error = refused(answer, 400, "BAD_REQUEST")
    assert "chunk-size" in str(error["message"])
    assert sent < 8 * MB, "the server answered only after the whole line"
    assert cpu < 0.5, f"the socket loop spent {cpu:.2f} s of CPU on one request"
    still_up(live)


def test_an_unterminated_trailer_is_cut_short(live: Live) -> None:
    head = request("POST", "/api/v1/plans", headers=PLANNER + "Transfer-Encoding: chunked\r\n")
    answer, _ = exchange(
        live, head + b"0\r\nX-Trailer: ", then=b"t" * 8192, repeat=(4 * MAX_CHUNK_LINE) // 8192 + 10
    )
    refused(answer, 400, "BAD_REQUEST")
    still_up(live)


def test_a_body_that_is_not_utf8_is_a_400(live: Live) -> None:
    body = b'{"revision": "m\xffin"}'
    answer, _ = exchange(live, request("POST", "/api/v1/plans", headers=PLANNER, body=body))
    error = refused(answer, 400, "BAD_REQUEST")
    assert "UTF-8" in str(error["message"])
    still_up(live)


def test_invalid_utf8_in_the_path_is_a_4xx(live: Live) -> None:
    for path in ("/api/v1/resources/%ff%fe/x", "/api/v1/plans/\xff\xfe"):
        answer, _ = exchange(live, request("GET", path, headers=PLANNER))
        assert 400 <= answer.status < 500, answer
        assert answer.headers["content-type"].startswith("application/json"), answer
    still_up(live)


def test_a_huge_query_string_or_header_is_a_431(live: Live) -> None:
    query = "kind=" + "k" * MAX_REQUEST_HEAD
    answer, _ = exchange(live, request("GET", f"/api/v1/resources?{query}", headers=PLANNER))
    refused(answer, 431, "HEADERS_TOO_LARGE")
    answer, _ = exchange(
        live, request("GET", "/healthz", headers=f"X-Junk: {'j' * MAX_REQUEST_HEAD}\r\n")
    )
    refused(answer, 431, "HEADERS_TOO_LARGE")
    many = "".join(f"X-H{i}: v\r\n" for i in range(MAX_REQUEST_HEAD // 8))
    answer, _ = exchange(live, request("GET", "/healthz", headers=many))
    refused(answer, 431, "HEADERS_TOO_LARGE")
    still_up(live)


@pytest.mark.parametrize("method", ["FOO", "PROPFIND", "TRACE", "CONNECT", "DELETE", "PUT"])
def test_unknown_methods_are_refused(live: Live, method: str) -> None:
    for path in ("/api/v1/plans", "/healthz"):
        answer, _ = exchange(live, request(method, path, headers=PLANNER))
        assert answer.status in (400, 405), answer
        assert answer.headers["content-type"].startswith("application/json"), answer
    still_up(live)
