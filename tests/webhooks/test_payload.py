"""The body size limit and the receiver registry."""

from __future__ import annotations

import io

import pytest

from webhooks import MAX_BODY_BYTES, PayloadTooLarge, ensure_size, github, gitlab, read_body
from webhooks.events import Forge


def test_limit_is_five_mebibytes() -> None:
    assert MAX_BODY_BYTES == 5 * 1024 * 1024


@pytest.mark.parametrize("length", [None, 0, 1, MAX_BODY_BYTES])
def test_sizes_within_the_limit_pass(length: int | None) -> None:
    ensure_size(length)


@pytest.mark.parametrize("length", [MAX_BODY_BYTES + 1, 25 * 1024 * 1024, 2**63])
def test_larger_bodies_are_refused_with_413(length: int) -> None:
    with pytest.raises(PayloadTooLarge) as info:
        ensure_size(length)
    assert info.value.http_status == 413
    assert str(length) in str(info.value)


def test_custom_limit() -> None:
    ensure_size(10, limit=10)
    with pytest.raises(PayloadTooLarge):
        ensure_size(11, limit=10)


def test_read_body_reads_what_was_announced() -> None:
    assert read_body(io.BytesIO(b'{"a":1}trailing'), 7) == b'{"a":1}'


def test_read_body_without_length_still_enforces_the_limit() -> None:
    # Chunked uploads announce nothing: the limit applies to what is actually read.
    assert read_body(io.BytesIO(b"x" * 10), None, limit=10) == b"x" * 10
    with pytest.raises(PayloadTooLarge):
        read_body(io.BytesIO(b"x" * 11), None, limit=10)


def test_read_body_refuses_before_reading() -> None:
    stream = io.BytesIO(b"x" * 100)
    with pytest.raises(PayloadTooLarge):
        read_body(stream, 100, limit=10)
    assert stream.tell() == 0


def test_receivers() -> None:
    assert github.WEBHOOK.forge is Forge.GITHUB
    assert github.WEBHOOK.route == "/webhooks/github"
    assert gitlab.WEBHOOK.forge is Forge.GITLAB
    assert gitlab.WEBHOOK.route == "/webhooks/gitlab"
