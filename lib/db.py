"""Engine factory tuned for serverless: small or no pool, PgBouncer-safe, SQLite in WAL mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from .config import Settings

# An execution option: transactions of an engine carrying it only read (see ``reader``).
READ_ONLY = "sluice_read_only"


def normalize_url(url: str) -> str:
    """postgres:// and postgresql:// (as Heroku, Neon and Supabase print them) → psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str, pool: str = "small") -> Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    kwargs: dict[str, Any] = {
        # prepare_threshold=None: transaction poolers (PgBouncer, Supavisor) can't keep
        # server-side prepared statements across a client's transactions.
        "connect_args": {"prepare_threshold": None, "connect_timeout": 10, "application_name": "sluice"},
        "pool_pre_ping": True,
        # Bound values are payloads, results and keys: keep them out of SQL logs and error text.
        "hide_parameters": True,
    }
    if pool == "null":
        kwargs["poolclass"] = NullPool
    else:
        # A warm function reuses a couple of connections; recycle before poolers drop idle ones.
        kwargs.update(pool_size=2, max_overflow=8, pool_recycle=300, pool_timeout=10)
    return sa.create_engine(url, **kwargs)


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[1] if "///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, open transactions (see _on_begin).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction can then never
        # fail with SQLITE_BUSY halfway, it waits its turn (busy_timeout) instead. Readers take
        # no lock: in WAL mode they see the last commit and never wait for a writer.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def reader(engine: Engine) -> Engine:
    """The engine for reads only: autocommit on PostgreSQL (no BEGIN/COMMIT round trips), a
    deferred BEGIN on SQLite (no write lock). Never write through it."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{READ_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(settings.database_url, settings.jobs_db_pool)
