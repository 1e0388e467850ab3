"""jobs, drains and schedules

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Frozen: plain SQLAlchemy types only, so later changes to lib/schema.py never rewrite history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)
PENDING = sa.text("status = 'pending'")
PROCESSING = sa.text("status = 'processing'")
FINISHED = sa.text("status IN ('completed', 'failed', 'cancelled')")
KEYED = sa.text("idempotency_key IS NOT NULL")
TENANTED = sa.text("tenant_id IS NOT NULL")


def _partial(where: sa.TextClause) -> dict[str, sa.TextClause]:
    return {"postgresql_where": where, "sqlite_where": where}


def upgrade() -> None:
    op.create_table(
        "sluice_jobs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("backoff_strategy", sa.String(16), nullable=False),
        sa.Column("backoff_delay", sa.Integer(), nullable=False),
        sa.Column("backoff_max", sa.Integer(), nullable=False),
        sa.Column("run_at", TIME, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME),
        sa.Column("last_error", sa.Text()),
        sa.Column("result", JSON),
        sa.Column("progress", sa.SmallInteger()),
        sa.Column("tenant_id", sa.String(255)),
        sa.Column("correlation_id", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(255)),
        sa.Column("lease_expires_at", TIME),
        sa.Column("claim_token", sa.Uuid()),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')",
            name="ck_sluice_jobs_status",
        ),
    )
    op.create_index(
        "ix_sluice_jobs_claim",
        "sluice_jobs",
        [sa.literal_column("priority DESC"), "run_at", "id"],
        **_partial(PENDING),
    )
    op.create_index("ix_sluice_jobs_lease", "sluice_jobs", ["lease_expires_at"], **_partial(PROCESSING))
    op.create_index("ix_sluice_jobs_finished", "sluice_jobs", ["status", "finished_at"], **_partial(FINISHED))
    op.create_index(
        "ux_sluice_jobs_idempotency",
        "sluice_jobs",
        [sa.text("coalesce(tenant_id, '')"), "idempotency_key"],
        unique=True,
        **_partial(KEYED),
    )
    op.create_index("ix_sluice_jobs_tenant", "sluice_jobs", ["tenant_id", "id"], **_partial(TENANTED))

    op.create_table(
        "sluice_drains",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("source", sa.String(8), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("retried", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("stopped_by", sa.String(8), nullable=False),
    )
    op.create_index("ix_sluice_drains_at", "sluice_drains", ["at"])

    op.create_table(
        "sluice_schedules",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("options", JSON, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("catch_up", sa.Boolean(), nullable=False),
        sa.Column("tenant_id", sa.String(255)),
        sa.Column("next_run_at", TIME),
        sa.Column("last_run_at", TIME),
        sa.Column("last_job_id", sa.Uuid()),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("ix_sluice_schedules_due", "sluice_schedules", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("sluice_schedules")
    op.drop_table("sluice_drains")
    op.drop_table("sluice_jobs")
