"""Alembic, driven from Python: ``python -m lib migrate`` and ``Queue.migrate()``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from .db import create_sqlite_file, sqlite_path

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> object:
    from alembic.config import Config  # lazy: alembic (~150 ms) is loaded by migrating only

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    from alembic import command  # lazy: alembic (~150 ms) is loaded by migrating only

    if engine.dialect.name == "sqlite":
        create_sqlite_file(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)  # type: ignore[arg-type]


def current(engine: sa.Engine) -> str | None:
    """The revision the database is at; None when never migrated (or, for SQLite, not there)."""
    # lazy: alembic (~150 ms) is loaded by migrating only
    from alembic.runtime.migration import MigrationContext

    if engine.dialect.name == "sqlite":
        path = sqlite_path(engine.url.render_as_string(hide_password=False))
        if path is not None and not Path(path).exists():
            return None
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
