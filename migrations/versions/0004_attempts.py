"""attempt history, step text on jobs, idle drains counted

Revision ID: 0004_attempts
Revises: 0001
Create Date: 2026-12-01

Frozen: plain SQLAlchemy types only, so later changes to lib/schema.py never rewrite history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_attempts"
down_revision = "0001"
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)
BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("sluice_jobs", sa.Column("step", sa.String(255)))
    op.create_table(
        "sluice_idle_drains",
        sa.Column("source", sa.String(8), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("last_at", TIME, nullable=False),
    )
    op.create_table(
        "sluice_attempts",
        sa.Column("id", BIGINT, primary_key=True),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("traceback", sa.Text()),
    )
    op.create_index("ix_sluice_attempts_job", "sluice_attempts", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("sluice_attempts")
    op.drop_table("sluice_idle_drains")
    # A plain DROP COLUMN (SQLite 3.35+): a batch rebuild would lose the expression index.
    op.drop_column("sluice_jobs", "step")
