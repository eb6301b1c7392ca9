"""Store tests run on SQLite and on PostgreSQL: `store_url` is parametrized over both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from metalform.store import Store

POSTGRES_PLUGIN = "tests.fixtures.postgres"


def pytest_configure(config: pytest.Config) -> None:
    # The PostgreSQL fixtures belong in tests/conftest.py's pytest_plugins; until they are
    # listed there, register them from here (a no-op once they are).
    if not config.pluginmanager.has_plugin(POSTGRES_PLUGIN):
        config.pluginmanager.import_plugin(POSTGRES_PLUGIN)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of an empty database, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('store') / 'metalform.db'}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on an empty database."""
    with Store.open(store_url) as opened:
        yield opened
