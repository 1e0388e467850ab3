"""The database clock as SQL expressions, per dialect: every time that matters is the database's."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from ..schema import UTCDateTime

# SQLite stores times as 'YYYY-MM-DD HH:MM:SS.ffffff'; strftime's %f gives milliseconds, so three
# zeros keep the text format identical to stored values (they compare as text).
_SQLITE_FMT = "%Y-%m-%d %H:%M:%f"


def now(dialect: str) -> ColumnElement[datetime]:
    if dialect == "postgresql":
        return sa.func.now(type_=UTCDateTime())
    return sa.type_coerce(sa.func.strftime(_SQLITE_FMT, "now", type_=sa.String()) + "000", UTCDateTime())


def now_plus(dialect: str, seconds: ColumnElement[float] | float) -> ColumnElement[datetime]:
    """now() + ``seconds`` (a number or a numeric SQL expression; may be fractional or negative)."""
    secs = seconds if isinstance(seconds, ColumnElement) else sa.literal(float(seconds), sa.Float())
    if dialect == "postgresql":
        interval = sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.cast(secs, sa.Float()))
        return sa.type_coerce(sa.func.now() + interval, UTCDateTime())
    modifier = sa.cast(secs, sa.Text()) + " seconds"
    return sa.type_coerce(
        sa.func.strftime(_SQLITE_FMT, "now", modifier, type_=sa.String()) + "000", UTCDateTime()
    )
