"""Plans and applies record the server process that runs them (crash recovery).

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch mode: SQLite cannot ALTER every kind of column in place
    for table in ("plans", "applies"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("owner", sa.String(255), nullable=True))


def downgrade() -> None:
    for table in ("plans", "applies"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("owner")
