"""durable steps kept on the job

Revision ID: 0007_steps
Revises: 0006_flow
Create Date: 2026-12-01

Frozen: plain SQLAlchemy types only, so later changes to lib/schema.py never rewrite history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_steps"
down_revision = "0006_flow"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable, no default: instant on PostgreSQL however many jobs exist.
    op.add_column("sluice_jobs", sa.Column("steps", JSON))


def downgrade() -> None:
    op.drop_column("sluice_jobs", "steps")
