"""The migrations build exactly the schema lib/schema.py describes, on both databases, and
running them again changes nothing."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from lib import Queue
from lib.migrate import alembic_config, current
from lib.schema import metadata
from tests.support.db import create_pg_database, drop_pg_database

# SQLite keeps an expression index (coalesce(tenant_id, '') here) but SQLAlchemy can't reflect
# one: the inspector skips it with the first warning and alembic declines to compare it with the
# second. Those are the only warnings allowed; the index is checked by name from sqlite_master.
EXPRESSION_INDEXES = {
    "ux_sluice_jobs_idempotency",
    "ix_sluice_jobs_fair",
    "ix_sluice_jobs_keyed",
    "ix_sluice_jobs_busy_keys",
    "ux_sluice_jobs_debounce",
}
SQLITE_EXPRESSION_INDEX_WARNINGS = tuple(
    text
    for name in sorted(EXPRESSION_INDEXES)
    for text in (
        f"Skipped unsupported reflection of expression-based index {name}",
        f"autogenerate skipping metadata-specified expression-based index '{name}'",
    )
)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, never-migrated database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    admin: str = request.getfixturevalue("pg_server")
    url = create_pg_database(admin, "sluice_migrations")
    try:
        yield url
    finally:
        drop_pg_database(admin, url)


@pytest.fixture
def fresh_queue(fresh_url: str) -> Iterator[Queue]:
    queue = Queue.from_url(fresh_url, jobs_db_pool="null")
    yield queue
    queue.engine.dispose()


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()  # type: ignore[arg-type]
    assert head is not None
    return head


def test_migrate_twice_is_idempotent(fresh_queue: Queue) -> None:
    assert current(fresh_queue.engine) is None
    fresh_queue.migrate()
    assert current(fresh_queue.engine) == head_revision()
    job = fresh_queue.enqueue("noop", {})
    fresh_queue.migrate()
    assert current(fresh_queue.engine) == head_revision()
    assert fresh_queue.get(job.id).status == "pending"
    with fresh_queue.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1


def test_migrated_schema_equals_lib_schema(fresh_queue: Queue) -> None:
    fresh_queue.migrate()
    sqlite = fresh_queue.dialect == "sqlite"
    with fresh_queue.engine.connect() as conn, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        reflected = {table: sa.inspect(conn).get_indexes(table) for table in metadata.tables}
        stored = _sqlite_index_names(conn) if sqlite else None
    assert diffs == []
    unexpected = [str(w.message) for w in seen if not sqlite or not _known_sqlite_warning(str(w.message))]
    assert unexpected == []

    for name, table in metadata.tables.items():
        expected = {str(index.name): index for index in table.indexes}
        got = {str(index["name"]): index for index in reflected[name]}
        if sqlite:
            # The inspector skips expression indexes on SQLite; sqlite_master still lists them.
            assert set(got) == set(expected) - EXPRESSION_INDEXES, name
            assert stored is not None and stored.get(name, set()) == set(expected), name
        else:
            assert set(got) == set(expected), name
        for index_name, index in got.items():
            model = expected[index_name]
            assert bool(index["unique"]) == model.unique, index_name
            where = index.get("dialect_options", {}).get(f"{fresh_queue.dialect}_where")
            model_where = model.dialect_options[fresh_queue.dialect]["where"]
            assert (where is not None) == (model_where is not None), index_name


def test_downgrade_to_base_and_back(fresh_queue: Queue) -> None:
    fresh_queue.migrate()
    with fresh_queue.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "base")  # type: ignore[arg-type]
    with fresh_queue.engine.connect() as conn:
        left = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    assert left == set()
    fresh_queue.migrate()
    assert current(fresh_queue.engine) == head_revision()
    assert fresh_queue.enqueue("noop", {}).id


def _known_sqlite_warning(message: str) -> bool:
    return message.startswith(SQLITE_EXPRESSION_INDEX_WARNINGS)


def _sqlite_index_names(conn: sa.Connection) -> dict[str, set[str]]:
    rows = conn.execute(
        sa.text("SELECT tbl_name, name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    )
    names: dict[str, set[str]] = {}
    for table, name in rows:
        names.setdefault(table, set()).add(name)
    return names
