"""The audit trail of BMC login secret rotations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as they were at this revision; migrations do not import the (changing) models.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
ID = sa.Uuid(as_uuid=False)


def upgrade() -> None:
    op.create_table(
        "rotations",
        sa.Column("id", ID, nullable=False),
        sa.Column("repository", sa.String(1024), nullable=False),
        sa.Column("apply_id", ID, nullable=True),
        sa.Column("credential", sa.String(255), nullable=False),
        sa.Column("who", sa.String(255), nullable=True),
        sa.Column("bmcs", JSON, nullable=False),
        sa.Column("fingerprint_before", sa.String(255), nullable=True),
        sa.Column("fingerprint_after", sa.String(255), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rotations"),
    )
    op.create_index("ix_rotations_repository_id", "rotations", ["repository", "id"])


def downgrade() -> None:
    op.drop_index("ix_rotations_repository_id", table_name="rotations")
    op.drop_table("rotations")
