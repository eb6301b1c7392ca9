"""Alembic migrations of the state store (run by `reconciler.store.migrate`)."""
