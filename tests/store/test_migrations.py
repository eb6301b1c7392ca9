"""The Alembic migrations create the whole schema from an empty database, and match the models."""

from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from metalform.store import Store
from metalform.store.migrate import MIGRATIONS_DIR, head_revision
from metalform.store.tables import Base

TABLES = {
    "alembic_version",
    "applies",
    "console_sessions",
    "apply_actions",
    "events",
    "locks",
    "provider_journal",
    "plans",
    "pr_comments",
    "repositories",
    "resource_labels",
    "resource_status",
    "rotations",
    "throttle_windows",
    "webhook_deliveries",
}


def test_open_migrates_an_empty_database_to_head(store_url: str) -> None:
    with Store.open(store_url, migrate_to_head=False) as bare:
        assert bare.schema_revision() is None
    with Store.open(store_url) as store:
        assert store.schema_revision() == head_revision() is not None
        engine = store._engine
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            # the migrations build exactly the schema the models declare
            assert compare_metadata(context, Base.metadata) == []
    # opening again is a no-op, data kept
    with Store.open(store_url) as store:
        store.create_plan("repo")
    with Store.open(store_url) as store:
        assert len(store.list_plans().items) == 1


def test_replicas_starting_together_migrate_once(store_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Store.open(store_url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store.open(store_url, migrate_to_head=False) as store:
        assert store.schema_revision() == head_revision()


def test_migration_scripts_ship_inside_the_package() -> None:
    # package data: importable from an installed wheel, no alembic.ini needed
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "__init__.py").is_file()
    assert MIGRATIONS_DIR.parent.name == "store"
