"""Engine factory tuned for serverless: small or no pool, PgBouncer-safe, SQLite in WAL mode."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from .config import Settings
from .errors import ConfigError, SluiceError, Unavailable

MIGRATE_HINT = "run `python -m lib migrate`"
NOT_MIGRATED = f"the database is not migrated (or not to the latest revision): {MIGRATE_HINT}"

P = ParamSpec("P")
R = TypeVar("R")

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


def sqlite_path(url: str) -> str | None:
    """The file of a sqlite:/// URL; None for an in-memory database."""
    path = normalize_url(url).split("///", 1)[1] if "///" in url else ""
    path = path.split("?", 1)[0]
    return None if path in ("", ":memory:") or path.startswith("file:") else path


def create_sqlite_file(url: str) -> None:
    """Make the SQLite file (and its folder) exist: only migrating creates a database."""
    import sqlite3  # lazy: a PostgreSQL app never loads the SQLite driver

    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sqlite3.connect(path).close()


def _sqlite_engine(url: str) -> Engine:
    import sqlite3  # lazy: a PostgreSQL app never loads the SQLite driver

    path = sqlite_path(url)
    kwargs: dict[str, Any] = {}
    if path is not None:
        # mode=rw: opening a file that isn't there fails (and explain() says why) instead of
        # creating an empty database that every later query would find without tables.
        target = f"file:{quote(str(Path(path).resolve()))}?mode=rw"
        kwargs["creator"] = lambda: sqlite3.connect(target, uri=True, timeout=30, check_same_thread=False)
    engine = sa.create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True, **kwargs
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


def explain(exc: BaseException, url: str) -> SluiceError | None:
    """A driver error as what it means to the operator: ConfigError (not migrated, unknown
    database, authentication, missing SQLite file) or Unavailable (unreachable); None when it is
    neither. Messages name DATABASE_URL's parts, never its password."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig)
    first = (text.strip().splitlines() or [""])[0]
    state = getattr(orig, "sqlstate", None)
    if state in ("42P01", "42703") or "no such table: sluice_" in text or "no such column" in text:
        return ConfigError(NOT_MIGRATED)
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return None
    where = _where(url)
    if "unable to open database file" in text:
        return ConfigError(_sqlite_missing(url))
    found = re.search(r'database "([^"]+)" does not exist', text)
    if found:
        return ConfigError(
            f'DATABASE_URL: database "{found[1]}" does not exist on {where}: create it, then {MIGRATE_HINT}'
        )
    if "password authentication failed" in text or re.search(r'role "[^"]+" does not exist', text):
        user = sa.engine.make_url(normalize_url(url)).username or "(none)"
        return ConfigError(f'DATABASE_URL: authentication failed for user "{user}" on {where}')
    if "no password supplied" in text:
        return ConfigError(f"DATABASE_URL: the server at {where} wants a password and none is given")
    state_word = "unreachable" if _UNREACHABLE.search(text) else "unavailable"
    return Unavailable(f"the database at {where} is {state_word} ({first[:200]}); try again")


_UNREACHABLE = re.compile(
    r"Connection refused|could not connect|timeout expired|timed out|could not translate host name|"
    r"Name or service not known|nodename nor servname|No route to host|Network is unreachable",
    re.IGNORECASE,
)


def _where(url: str) -> str:
    try:
        parsed = sa.engine.make_url(normalize_url(url))
    except sa.exc.ArgumentError:
        return "DATABASE_URL"
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "memory"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _sqlite_missing(url: str) -> str:
    path = Path(sqlite_path(url) or "")
    if not path.parent.is_dir():
        folder = f"the folder of the SQLite file {path} does not exist"
        return f"DATABASE_URL: {folder}; {MIGRATE_HINT} to create it"
    if not path.exists():
        return f"DATABASE_URL: there is no SQLite database at {path}; {MIGRATE_HINT} to create it"
    return f"DATABASE_URL: the SQLite file {path} cannot be opened (check its permissions)"


def reader(engine: Engine) -> Engine:
    """The engine for reads only: autocommit on PostgreSQL (no BEGIN/COMMIT round trips), a
    deferred BEGIN on SQLite (no write lock). Never write through it."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{READ_ONLY: True})
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(settings.database_url, settings.jobs_db_pool)


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """Database faults that say something about the setup become ConfigError (not migrated,
    unknown database, authentication: the API's 503 not_configured), connection faults
    Unavailable (503 unavailable); never a bare driver error. Messages name the DATABASE_URL of
    the ``settings`` of the method's owner (the facade or a service), when it has them."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except sa.exc.DBAPIError as exc:
            settings = getattr(args[0], "settings", None) if args else None
            explained = explain(exc, settings.database_url if isinstance(settings, Settings) else "")
            if explained is not None:
                raise explained from exc
            if exc.connection_invalidated:
                raise Unavailable("the database connection was lost; try again") from exc
            raise

    return wrapper
