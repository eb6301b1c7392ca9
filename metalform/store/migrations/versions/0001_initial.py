"""The initial schema: repositories, plans, applies, events, webhooks, resource status, locks.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types as they were at this revision; migrations do not import the (changing) models.
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
ID = sa.Uuid(as_uuid=False)
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("last_planned_revision", sa.String(255), nullable=True),
        sa.Column("last_planned_at", TIME, nullable=True),
        sa.Column("last_plan_id", ID, nullable=True),
        sa.Column("last_applied_revision", sa.String(255), nullable=True),
        sa.Column("last_applied_at", TIME, nullable=True),
        sa.Column("last_apply_id", ID, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_repositories"),
    )
    op.create_table(
        "plans",
        sa.Column("id", ID, nullable=False),
        sa.Column("repository", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("who", sa.String(255), nullable=True),
        sa.Column("ref", sa.String(255), nullable=True),
        sa.Column("revision", sa.String(255), nullable=True),
        sa.Column("pull_request", sa.String(512), nullable=True),
        sa.Column("document", JSON, nullable=True),
        sa.Column("summary", JSON, nullable=False),
        sa.Column("action_count", sa.Integer(), nullable=False),
        sa.Column("diagnostics_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["repository"], ["repositories.key"], name="fk_plans_repository_repositories"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_plans"),
    )
    op.create_index("ix_plans_repository_id", "plans", ["repository", "id"])
    op.create_index("ix_plans_pull_request", "plans", ["pull_request"])
    op.create_table(
        "applies",
        sa.Column("id", ID, nullable=False),
        sa.Column("plan_id", ID, nullable=False),
        sa.Column("repository", sa.String(1024), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("who", sa.String(255), nullable=True),
        sa.Column("revision", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name="fk_applies_plan_id_plans"),
        sa.ForeignKeyConstraint(
            ["repository"], ["repositories.key"], name="fk_applies_repository_repositories"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_applies"),
    )
    op.create_index("ix_applies_repository_id", "applies", ["repository", "id"])
    op.create_index("ix_applies_plan_id", "applies", ["plan_id"])
    op.create_table(
        "apply_actions",
        sa.Column("apply_id", ID, nullable=False),
        sa.Column("action_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["apply_id"],
            ["applies.id"],
            name="fk_apply_actions_apply_id_applies",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("apply_id", "action_id", name="pk_apply_actions"),
    )
    op.create_table(
        "events",
        sa.Column("id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("repository", sa.String(1024), nullable=True),
        sa.Column("plan_id", ID, nullable=True),
        sa.Column("apply_id", ID, nullable=True),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("payload", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_apply_id_id", "events", ["apply_id", "id"])
    op.create_index("ix_events_plan_id_id", "events", ["plan_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("forge", sa.String(32), nullable=False),
        sa.Column("delivery_id", sa.String(255), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("result", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("forge", "delivery_id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])
    op.create_table(
        "resource_status",
        sa.Column("repository", sa.String(1024), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("labels", JSON, nullable=False),
        sa.Column("sync", sa.String(16), nullable=False),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("last_action", sa.String(255), nullable=True),
        sa.Column("last_result", sa.String(16), nullable=True),
        sa.Column("last_action_at", TIME, nullable=True),
        sa.Column("updated_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["repository"],
            ["repositories.key"],
            name="fk_resource_status_repository_repositories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository", "address", name="pk_resource_status"),
    )
    op.create_index("ix_resource_status_repository_kind", "resource_status", ["repository", "kind"])
    op.create_index("ix_resource_status_repository_sync", "resource_status", ["repository", "sync"])
    op.create_index(
        "ix_resource_status_repository_health", "resource_status", ["repository", "health"]
    )
    op.create_table(
        "resource_labels",
        sa.Column("repository", sa.String(1024), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["repository", "address"],
            ["resource_status.repository", "resource_status.address"],
            name="fk_resource_labels_resource_status",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repository", "address", "key", name="pk_resource_labels"),
    )
    op.create_index("ix_resource_labels_key_value", "resource_labels", ["key", "value"])
    op.create_table(
        "pr_comments",
        sa.Column("forge", sa.String(32), nullable=False),
        sa.Column("repo", sa.String(512), nullable=False),
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("comment_id", sa.String(255), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("forge", "repo", "number", name="pk_pr_comments"),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(1100), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )


def downgrade() -> None:
    for table in (
        "locks",
        "pr_comments",
        "resource_labels",
        "resource_status",
        "webhook_deliveries",
        "events",
        "apply_actions",
        "applies",
        "plans",
        "repositories",
    ):
        op.drop_table(table)
