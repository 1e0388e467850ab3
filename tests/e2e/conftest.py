"""Fixtures for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.config import get_settings
from tests.support.db import create_pg_database, drop_pg_database


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A migrated SQLite database in DATABASE_URL, the test job types, no keys; settings re-read."""
    path = tmp_path / "cli.db"
    path.write_bytes(sqlite_template.read_bytes())
    url = f"sqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("JOBS_HANDLER_MODULES", "tests.jobtypes")
    for name in (
        "JOBS_API_KEYS",
        "JOB_PROCESSOR_API_KEY",
        "JOBS_TENANT_KEYS",
        "CRON_SECRET",
        "JOBS_BATCH_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of its own (servers under test migrate it themselves)."""
    url = create_pg_database(pg_server, "sluice_e2e")
    yield url
    drop_pg_database(pg_server, url)
