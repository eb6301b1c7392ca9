"""The database schema, as SQLAlchemy ORM classes. Alembic migrations create and change it.

Every change here needs a migration in `migrations/versions/`; a test compares the two.
Closed vocabularies are stored as their string values (no native enum types), so adding a
value needs no migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database.

    SQLite has no time zone support: values are stored as naive UTC and made aware again on
    the way out, so callers always compare aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use an aware (UTC) datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL: compact, and comparable should a later query need it
JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only makes an INTEGER PRIMARY KEY an auto-incrementing rowid
EventIdType = BigInteger().with_variant(Integer(), "sqlite")
IdType = Uuid(as_uuid=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RepositoryRow(Base):
    __tablename__ = "repositories"

    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    last_planned_revision: Mapped[str | None] = mapped_column(String(255))
    last_planned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_plan_id: Mapped[str | None] = mapped_column(IdType)
    last_applied_revision: Mapped[str | None] = mapped_column(String(255))
    last_applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_apply_id: Mapped[str | None] = mapped_column(IdType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PlanRow(Base):
    __tablename__ = "plans"
    __table_args__ = (
        Index("ix_plans_repository_id", "repository", "id"),
        Index("ix_plans_pull_request", "pull_request"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    repository: Mapped[str] = mapped_column(ForeignKey("repositories.key"))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    who: Mapped[str | None] = mapped_column(String(255))
    ref: Mapped[str | None] = mapped_column(String(255))
    revision: Mapped[str | None] = mapped_column(String(255))
    pull_request: Mapped[str | None] = mapped_column(String(512))
    owner: Mapped[str | None] = mapped_column(String(255))
    document: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    summary: Mapped[dict[str, int]] = mapped_column(JSONType)
    action_count: Mapped[int] = mapped_column(Integer)
    diagnostics_count: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApplyRow(Base):
    __tablename__ = "applies"
    __table_args__ = (
        Index("ix_applies_repository_id", "repository", "id"),
        Index("ix_applies_plan_id", "plan_id"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("plans.id"))
    repository: Mapped[str] = mapped_column(ForeignKey("repositories.key"))
    status: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    who: Mapped[str | None] = mapped_column(String(255))
    revision: Mapped[str | None] = mapped_column(String(255))
    owner: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApplyActionRow(Base):
    __tablename__ = "apply_actions"

    apply_id: Mapped[str] = mapped_column(
        ForeignKey("applies.id", ondelete="CASCADE"), primary_key=True
    )
    action_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    address: Mapped[str] = mapped_column(String(255))
    operation: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class EventRow(Base):
    """The event log. No foreign keys: the log outlives what it talks about, and inserting
    must never wait on a lock of another table."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_apply_id_id", "apply_id", "id"),
        Index("ix_events_plan_id_id", "plan_id", "id"),
    )

    id: Mapped[int] = mapped_column(EventIdType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    type: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str | None] = mapped_column(String(1024))
    plan_id: Mapped[str | None] = mapped_column(IdType)
    apply_id: Mapped[str | None] = mapped_column(IdType)
    address: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)


class WebhookDeliveryRow(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_received_at", "received_at"),)

    forge: Mapped[str] = mapped_column(String(32), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    result: Mapped[str] = mapped_column(String(255))


class ResourceStatusRow(Base):
    __tablename__ = "resource_status"
    __table_args__ = (
        Index("ix_resource_status_repository_kind", "repository", "kind"),
        Index("ix_resource_status_repository_sync", "repository", "sync"),
        Index("ix_resource_status_repository_health", "repository", "health"),
    )

    repository: Mapped[str] = mapped_column(
        ForeignKey("repositories.key", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    labels: Mapped[dict[str, str]] = mapped_column(JSONType)
    sync: Mapped[str] = mapped_column(String(16))
    health: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    last_action: Mapped[str | None] = mapped_column(String(255))
    last_result: Mapped[str | None] = mapped_column(String(16))
    last_action_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ResourceLabelRow(Base):
    """Labels of a resource, one row each, so label selectors are indexed queries on every
    database (no JSON operators, which SQLite and PostgreSQL spell differently)."""

    __tablename__ = "resource_labels"
    __table_args__ = (
        ForeignKeyConstraint(
            ["repository", "address"],
            ["resource_status.repository", "resource_status.address"],
            ondelete="CASCADE",
            name="fk_resource_labels_resource_status",
        ),
        Index("ix_resource_labels_key_value", "key", "value"),
    )

    repository: Mapped[str] = mapped_column(String(1024), primary_key=True)
    address: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class PullRequestCommentRow(Base):
    __tablename__ = "pr_comments"

    forge: Mapped[str] = mapped_column(String(32), primary_key=True)
    repo: Mapped[str] = mapped_column(String(512), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    comment_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LockRow(Base):
    """Leased locks, used where the database has no advisory locks (SQLite).

    Times are Unix seconds: the holders compare them with their own clock, and on SQLite all
    holders share one host and so one clock.
    """

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(1100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class ThrottleWindowRow(Base):
    """Notification throttle windows of CLI runs (`metalform plan --notify --database`):
    one row per scope (the desired-state directory) and rule, its window as JSON."""

    __tablename__ = "throttle_windows"

    scope: Mapped[str] = mapped_column(String(1024), primary_key=True)
    rule: Mapped[str] = mapped_column(String(255), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JournalRow(Base):
    """An entry of a provider's journal (`reconciler.provider.Journal`): what it did that a
    live system cannot tell it, such as the keyed fingerprint of a BMC account password it set
    (never a secret). One row per journal and key; the newest entry wins."""

    __tablename__ = "provider_journal"

    journal: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    entry: Mapped[dict[str, Any]] = mapped_column(JSONType)
    recorded_at: Mapped[float] = mapped_column(Float)
    """Unix seconds, as the entry's `at`."""


class RotationRow(Base):
    """A rotation of a BMC login secret by one apply: the audit trail (never a value; keyed
    fingerprints only). Kept when retention drops the apply: no foreign key to it."""

    __tablename__ = "rotations"
    __table_args__ = (Index("ix_rotations_repository_id", "repository", "id"),)

    id: Mapped[str] = mapped_column(IdType, primary_key=True)
    repository: Mapped[str] = mapped_column(String(1024))
    apply_id: Mapped[str | None] = mapped_column(IdType)
    credential: Mapped[str] = mapped_column(String(255))
    who: Mapped[str | None] = mapped_column(String(255))
    bmcs: Mapped[list[str]] = mapped_column(JSONType)
    fingerprint_before: Mapped[str | None] = mapped_column(String(255))
    fingerprint_after: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ConsoleSessionRow(Base):
    """A web console sign-in, shared by every replica of the server: the session id's
    digest (never the id), who signed in, the form token and when it expires (Unix seconds)."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_expires_at", "expires_at"),)

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    csrf: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
