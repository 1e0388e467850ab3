"""Property-based tests of the whole API against its own OpenAPI document (schemathesis, over WSGI):
no 5xx, every status code documented, every body matching its schema. SQLite, admin key."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api._http import reserved_segments
from api._state import app_state
from api.index import create_app
from lib.config import Settings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# schemathesis.pytest.from_fixture breaks on pytest 9 (it rewrites Node._nodeid), so the schema is
# loaded at import. Loading reads only /api/openapi.json; the database file is made by the fixture.
_DIR = Path(tempfile.gettempdir()) / f"sluice-schemathesis-{uuid.uuid4().hex[:12]}"
APP = create_app(
    Settings(
        database_url=f"sqlite:///{_DIR / 'sluice.db'}",
        jobs_api_keys="k1,k2",
        jobs_tenant_keys="acme:ta",
        cron_secret="cs",
        jobs_handler_modules="tests.jobtypes",
        # A generated drain must stay short whatever budgetMs says.
        jobs_drain_budget_ms=1000,
    )
)
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", APP)
schema.config.update(headers={"x-api-key": "k1"})
schema.config.generation.update(max_examples=100, with_security_parameters=False, database="none")


@pytest.fixture(scope="module", autouse=True)
def database(sqlite_template: Path) -> Iterator[None]:
    _DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(sqlite_template, _DIR / "sluice.db")
    yield
    app_state(APP).dispose()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    job_id = (case.path_parameters or {}).get("id")
    path_info = case.meta.components.get(ParameterLocation.PATH) if case.meta else None
    negative = path_info is not None and path_info.mode == GenerationMode.NEGATIVE
    if job_id is not None and (job_id in reserved_segments(APP.url_map) or (negative and "/" in job_id)):
        # A negative id (the document excludes these) that spells another route, such as "status"
        # or "status/", is served by that route; tests/integration covers the routing itself.
        return
    case.call_and_validate(checks=CHECKS)
