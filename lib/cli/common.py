"""What more than one command needs (the dev server included): logging set-up, a safe
DATABASE_URL for messages, migrating a database."""

from __future__ import annotations

import argparse

import sqlalchemy as sa

from .. import logs
from ..config import Settings
from ..db import engine_from_settings
from ..migrate import current, upgrade


def safe_url(url: str) -> str:
    """DATABASE_URL without its password, for messages."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable DATABASE_URL>"


def configure_logs(args: argparse.Namespace, settings: Settings, *, long_running: bool = False) -> None:
    """Workers and the dev server log every job; one-shot commands only warnings, unless -v."""
    level = settings.jobs_log_level if (long_running or args.verbose) else "WARNING"
    logs.configure(level)


def migrate_database(settings: Settings) -> str | None:
    """Apply the migrations; returns the revision the database is at.

    The engine alone, not a Queue: migrating must not import the app's handler modules.
    """
    engine = engine_from_settings(settings)
    try:
        upgrade(engine)
        return current(engine)
    finally:
        engine.dispose()
