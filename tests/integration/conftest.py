"""Fixtures for the integration tests: the Flask app on the test database, a webhook receiver, a
queue archiving to (moto) S3, settings read from a patched environment."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api._state import app_state
from api.index import create_app
from lib import Queue
from lib.config import get_settings
from tests.support.api import api_settings
from tests.support.archive import BUCKET
from tests.support.db import make_queue
from tests.support.webhook import Webhook, serve_webhook


@pytest.fixture
def app(db_url: str) -> Iterator[Flask]:
    app = create_app(api_settings(db_url))
    yield app
    app_state(app).dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    yield from serve_webhook()


@pytest.fixture
def archived_queue(db_url: str, aws_mock: None) -> Iterator[Queue]:
    q = make_queue(db_url, jobs_archive_s3_bucket=BUCKET)
    yield q
    q.engine.dispose()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Settings come from the environment (handlers read the process's settings)."""
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
