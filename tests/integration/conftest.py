"""Fixtures for the HTTP API's integration tests: the Flask app on the test database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib.config import Settings


def api_settings(db_url: str, **overrides: Any) -> Settings:
    """Two admin keys (rotation), two tenants, a cron secret and the test job types."""
    values: dict[str, Any] = {
        "database_url": db_url,
        "jobs_api_keys": "k1,k2",
        "jobs_tenant_keys": "acme:ta,globex:tg",
        "cron_secret": "cs",
        "jobs_handler_modules": "tests.jobtypes",
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app(api_settings(db_url))
    yield app
    app_state(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
