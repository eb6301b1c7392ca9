"""Alembic migrations of the state store (run by `metalform.store.migrate`)."""
