"""Database URLs and time-ordered ids (no database needed)."""

from __future__ import annotations

import uuid

import pytest

from metalform.store import StoreError
from metalform.store.database import normalize_url
from metalform.store.ids import new_id, parse_id


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("sqlite:///metalform.db", "sqlite"),
        ("sqlite:////var/lib/metalform/state.db", "sqlite"),
        ("postgresql://metalform@db.example/metalform", "postgresql+psycopg"),
        ("postgres://metalform@db.example/metalform", "postgresql+psycopg"),
        ("postgresql+psycopg://metalform@/metalform?host=/run/pg", "postgresql+psycopg"),
    ],
)
def test_supported_urls(given: str, driver: str) -> None:
    assert normalize_url(given).drivername == driver


@pytest.mark.parametrize(
    "given", ["sqlite://", "sqlite:///:memory:", "mysql://x@y/z", "not a url", ""]
)
def test_unsupported_urls_are_refused_clearly(given: str) -> None:
    with pytest.raises(StoreError):
        normalize_url(given)


def test_ids_are_uuid7_and_sort_by_creation() -> None:
    ids = [new_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 7 for i in ids[:10])
    assert parse_id(ids[0].upper()) == ids[0]
    assert parse_id("nope") is None
