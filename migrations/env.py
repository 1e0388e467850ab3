"""Alembic environment: runs on the connection Sluice hands it, or on DATABASE_URL."""

from __future__ import annotations

from alembic import context

from lib.config import get_settings
from lib.db import make_engine
from lib.schema import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(get_settings().database_url, "null")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
