"""flow control: concurrency keys, debounce keys, dependencies, completion callbacks

Revision ID: 0006_flow
Revises: 0004_attempts
Create Date: 2026-12-01

Frozen: plain SQLAlchemy types only, so later changes to lib/schema.py never rewrite history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_flow"
down_revision = "0004_attempts"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
PENDING = "status = 'pending'"
TENANT = sa.text("coalesce(tenant_id, '')")


def upgrade() -> None:
    op.add_column("sluice_jobs", sa.Column("concurrency_key", sa.String(255)))
    op.add_column("sluice_jobs", sa.Column("concurrency_limit", sa.Integer()))
    op.add_column("sluice_jobs", sa.Column("debounce_key", sa.String(255)))
    op.add_column("sluice_jobs", sa.Column("after_ids", JSON))
    op.add_column("sluice_jobs", sa.Column("callback_url", sa.String(2048)))
    op.add_column("sluice_jobs", sa.Column("callback_sent_at", sa.DateTime(timezone=True)))
    # The fair-share claim walks tenants with pending jobs, then each one's jobs in claim order;
    # plain and keyed jobs apart, so a backlog of one never slows the claim of the other.
    for name, where in (
        ("ix_sluice_jobs_fair", f"{PENDING} AND concurrency_key IS NULL"),
        ("ix_sluice_jobs_keyed", f"{PENDING} AND concurrency_key IS NOT NULL"),
    ):
        op.create_index(
            name,
            "sluice_jobs",
            [TENANT, sa.text("priority DESC"), "run_at", "id"],
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    busy = "status = 'processing' AND concurrency_key IS NOT NULL"
    op.create_index(
        "ix_sluice_jobs_busy_keys",
        "sluice_jobs",
        [TENANT, "concurrency_key"],
        postgresql_where=sa.text(busy),
        sqlite_where=sa.text(busy),
    )
    debounced = f"{PENDING} AND debounce_key IS NOT NULL"
    op.create_index(
        "ux_sluice_jobs_debounce",
        "sluice_jobs",
        [TENANT, "debounce_key"],
        unique=True,
        postgresql_where=sa.text(debounced),
        sqlite_where=sa.text(debounced),
    )
    waiting = f"{PENDING} AND after_ids IS NOT NULL"
    op.create_index(
        "ix_sluice_jobs_waiting",
        "sluice_jobs",
        ["id"],
        postgresql_where=sa.text(waiting),
        sqlite_where=sa.text(waiting),
    )
    unsent = "callback_url IS NOT NULL AND callback_sent_at IS NULL AND status IN ('completed', 'failed')"
    op.create_index(
        "ix_sluice_jobs_callbacks",
        "sluice_jobs",
        ["id"],
        postgresql_where=sa.text(unsent),
        sqlite_where=sa.text(unsent),
    )


def downgrade() -> None:
    for name in (
        "ix_sluice_jobs_callbacks",
        "ix_sluice_jobs_waiting",
        "ux_sluice_jobs_debounce",
        "ix_sluice_jobs_busy_keys",
        "ix_sluice_jobs_keyed",
        "ix_sluice_jobs_fair",
    ):
        op.drop_index(name, "sluice_jobs")
    for column in (
        "callback_sent_at",
        "callback_url",
        "after_ids",
        "debounce_key",
        "concurrency_limit",
        "concurrency_key",
    ):
        op.drop_column("sluice_jobs", column)
