"""The tables: the one definition that migrations and queries share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """timestamptz on PostgreSQL, ISO text on SQLite; always an aware UTC datetime in Python."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a timezone")
        value = value.astimezone(UTC)
        # SQLite compares times as text, so every stored value must share one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONDoc(sa.types.TypeDecorator[Any]):
    """JSONB on PostgreSQL, JSON text elsewhere. The PostgreSQL dialect is imported only when a
    PostgreSQL engine asks (it costs ~40 ms of cold start an SQLite app needn't pay)."""

    impl = sa.JSON()
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB  # lazy: the PostgreSQL dialect only

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


class JSONOrNull(JSONDoc):
    """JSONDoc where Python None is SQL NULL (not JSON null), so ``IS NULL`` finds it."""

    impl = sa.JSON(none_as_null=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB  # lazy: the PostgreSQL dialect only

            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(sa.JSON(none_as_null=True))


metadata = sa.MetaData()

jobs = sa.Table(
    "sluice_jobs",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("payload", JSONDoc(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("priority", sa.Integer(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("timeout_seconds", sa.Integer(), nullable=False),
    sa.Column("backoff_strategy", sa.String(16), nullable=False),
    sa.Column("backoff_delay", sa.Integer(), nullable=False),
    sa.Column("backoff_max", sa.Integer(), nullable=False),
    sa.Column("run_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("last_error", sa.Text()),
    sa.Column("result", JSONDoc()),
    sa.Column("progress", sa.SmallInteger()),
    sa.Column("tenant_id", sa.String(255)),
    sa.Column("correlation_id", sa.String(255), nullable=False),
    sa.Column("idempotency_key", sa.String(255)),
    # A claim sets both; every later write is fenced on them (id + claim_token + processing).
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("claim_token", sa.Uuid()),
    # The last step text a handler reported with its progress (ctx.progress(50, "resizing")).
    sa.Column("step", sa.String(255)),
    # Durable steps finished so far: {name: {"result": JSON, "finishedAt": ISO}} (lib/steps.py).
    # On the row, not a table: deleting or erasing a job takes its steps with it, and a manual
    # retry keeps them (it resumes). Hidden from Job: lists never load step results.
    sa.Column("steps", JSONDoc()),
    # Flow control (lib/flow.py): at most concurrency_limit jobs of one (tenant, key) processing;
    # one pending job per (tenant, debounce key); after_ids must all complete before it runs
    # (held at HELD_RUN_AT meanwhile); callback_url gets the finished job.
    sa.Column("concurrency_key", sa.String(255)),
    sa.Column("concurrency_limit", sa.Integer()),
    sa.Column("debounce_key", sa.String(255)),
    sa.Column("after_ids", JSONOrNull()),
    sa.Column("callback_url", sa.String(2048)),
    # The finished_at of the end whose callback job was enqueued (a sweep finds the ones not yet).
    sa.Column("callback_sent_at", UTCDateTime()),
    sa.CheckConstraint(
        "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')",
        name="ck_sluice_jobs_status",
    ),
)

_pending = sa.text("status = 'pending'")
_processing = sa.text("status = 'processing'")
_finished = sa.text("status IN ('completed', 'failed', 'cancelled')")
_keyed = sa.text("idempotency_key IS NOT NULL")
_tenanted = sa.text("tenant_id IS NOT NULL")

# Matches the claim: WHERE status='pending' AND run_at <= now() ORDER BY priority DESC, run_at, id.
# Partial, so finished rows (often millions) never slow a claim.
sa.Index(
    "ix_sluice_jobs_claim",
    jobs.c.priority.desc(),
    jobs.c.run_at,
    jobs.c.id,
    postgresql_where=_pending,
    sqlite_where=_pending,
)
sa.Index(
    "ix_sluice_jobs_lease",
    jobs.c.lease_expires_at,
    postgresql_where=_processing,
    sqlite_where=_processing,
)
sa.Index(
    "ix_sluice_jobs_finished",
    jobs.c.status,
    jobs.c.finished_at,
    postgresql_where=_finished,
    sqlite_where=_finished,
)
# NULL tenants are distinct in a unique index, so the key is unique per coalesce(tenant, '').
IDEMPOTENCY_TENANT = sa.func.coalesce(jobs.c.tenant_id, sa.literal_column("''"))
sa.Index(
    "ux_sluice_jobs_idempotency",
    IDEMPOTENCY_TENANT,
    jobs.c.idempotency_key,
    unique=True,
    postgresql_where=_keyed,
    sqlite_where=_keyed,
)
sa.Index(
    "ix_sluice_jobs_tenant",
    jobs.c.tenant_id,
    jobs.c.id,
    postgresql_where=_tenanted,
    sqlite_where=_tenanted,
)
# Fair share: the claim walks the tenants with pending jobs (a skip scan), then each one's jobs
# in claim order. NULL tenants share the '' slot, like idempotency keys.
# Plain and keyed jobs apart, so a backlog of one never slows the claim of the other.
_plain_pending = sa.text("status = 'pending' AND concurrency_key IS NULL")
_keyed_pending = sa.text("status = 'pending' AND concurrency_key IS NOT NULL")
for _name, _where in (("ix_sluice_jobs_fair", _plain_pending), ("ix_sluice_jobs_keyed", _keyed_pending)):
    sa.Index(
        _name,
        IDEMPOTENCY_TENANT,
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        postgresql_where=_where,
        sqlite_where=_where,
    )
_busy = sa.text("status = 'processing' AND concurrency_key IS NOT NULL")
sa.Index(
    "ix_sluice_jobs_busy_keys",
    IDEMPOTENCY_TENANT,
    jobs.c.concurrency_key,
    postgresql_where=_busy,
    sqlite_where=_busy,
)
_debounced = sa.text("status = 'pending' AND debounce_key IS NOT NULL")
sa.Index(
    "ux_sluice_jobs_debounce",
    IDEMPOTENCY_TENANT,
    jobs.c.debounce_key,
    unique=True,
    postgresql_where=_debounced,
    sqlite_where=_debounced,
)
_waiting = sa.text("status = 'pending' AND after_ids IS NOT NULL")
sa.Index("ix_sluice_jobs_waiting", jobs.c.id, postgresql_where=_waiting, sqlite_where=_waiting)
_unsent = sa.text(
    "callback_url IS NOT NULL AND callback_sent_at IS NULL AND status IN ('completed', 'failed')"
)
sa.Index("ix_sluice_jobs_callbacks", jobs.c.id, postgresql_where=_unsent, sqlite_where=_unsent)

# One row per drain: the status view's lastDrain and the metrics' drain history.
drains = sa.Table(
    "sluice_drains",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("processed", sa.Integer(), nullable=False),
    sa.Column("succeeded", sa.Integer(), nullable=False),
    sa.Column("retried", sa.Integer(), nullable=False),
    sa.Column("failed", sa.Integer(), nullable=False),
    sa.Column("duration_ms", sa.Integer(), nullable=False),
    sa.Column("stopped_by", sa.String(8), nullable=False),
)
sa.Index("ix_sluice_drains_at", drains.c.at)

# Drains that found nothing to do, counted per source instead of one history row each: a cron
# ticking every minute would otherwise bury the last drain that did work.
idle_drains = sa.Table(
    "sluice_idle_drains",
    metadata,
    sa.Column("source", sa.String(8), primary_key=True),
    sa.Column("count", sa.BigInteger(), nullable=False),
    sa.Column("last_at", UTCDateTime(), nullable=False),
)

# One row per attempt of a job that did not complete it (its history: outcome, error, the handler's
# traceback). No foreign key: a per-row cascade halved the cleanup's delete rate, so the statements
# that delete jobs (lib/store/maintenance.py) delete their attempts in the same transaction.
attempts = sa.Table(
    "sluice_attempts",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("job_id", sa.Uuid(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text()),
    sa.Column("traceback", sa.Text()),
)
sa.Index("ix_sluice_attempts_job", attempts.c.job_id, attempts.c.id)

schedules = sa.Table(
    "sluice_schedules",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("cron", sa.String(255), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("type", sa.String(255), nullable=False),
    sa.Column("payload", JSONDoc(), nullable=False),
    # The job options of an enqueue (priority, maxAttempts, timeoutSeconds, backoff, tenantId).
    sa.Column("options", JSONDoc(), nullable=False),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("catch_up", sa.Boolean(), nullable=False),
    sa.Column("tenant_id", sa.String(255)),
    sa.Column("next_run_at", UTCDateTime()),
    sa.Column("last_run_at", UTCDateTime()),
    sa.Column("last_job_id", sa.Uuid()),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)
sa.Index("ix_sluice_schedules_due", schedules.c.next_run_at)


def job_columns() -> list[sa.Column[Any]]:
    """The columns a Job is built from, in a stable order."""
    hidden = {
        "lease_expires_at",
        "claim_token",
        "backoff_strategy",
        "backoff_delay",
        "backoff_max",
        "callback_sent_at",
        "steps",
    }
    return [c for c in jobs.c if c.name not in hidden]
