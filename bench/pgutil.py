"""Throw-away PostgreSQL databases for benchmark cases."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import LiteralString

import psycopg
from psycopg import sql

# Maintenance connection used only for CREATE/DROP DATABASE; loopback only.
ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _dsn_for(dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    user, host, port = info.get("user", "postgres"), info.get("host", "127.0.0.1"), info.get("port", "5432")
    return f"postgresql://{user}@{host}:{port}/{dbname}"


@contextmanager
def fresh_database(name: str) -> Iterator[str]:
    """Create bench_<name>_<random>, yield its DSN, always drop it afterwards."""
    dbname = f"bench_{name}_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:  # CREATE DATABASE can't run in a tx
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield _dsn_for(dbname)
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            # FORCE (PG 13+) kicks out connections a peer library may have leaked.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def scalar(dsn: str, query: LiteralString) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def server_version() -> str:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


# Between enqueue and drain every case runs ANALYZE (untimed): on a fresh database the planner has
# no statistics yet and may pick a plan that scans every pending row per claim (procrastinate's
# fetch_job does: quadratic drain). A live system has statistics from autovacuum. --no-analyze
# turns this off to show the cold-statistics behaviour.
ANALYZE_BEFORE_DRAIN = True


def analyze(dsn: str) -> None:
    if ANALYZE_BEFORE_DRAIN:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE")
