"""Alembic migrations, run from code: the package carries its own migration scripts."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, func, select

from metalform.store.database import WRITE_OPTION
from metalform.store.locks import advisory_key

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = "metalform:migrations"


def alembic_config() -> Config:
    """An Alembic configuration pointing at the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def head_revision() -> str | None:
    """The newest migration shipped with this version of Metalform."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database to `revision`; safe when several processes start at once.

    All migrations run in one transaction. On PostgreSQL a transaction-level advisory lock makes
    concurrent starters wait for the first one; on SQLite the write transaction (BEGIN
    IMMEDIATE) does the same.
    """
    config = alembic_config()
    with engine.execution_options(**{WRITE_OPTION: True}).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(advisory_key(_MIGRATION_LOCK))))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
