"""Tenant ids are 1..255 characters of [A-Za-z0-9._:@-]: anything else is 422 at enqueue (one job,
a batch, a schedule), in the list filter, and a start-up problem in JOBS_TENANT_KEYS."""

from __future__ import annotations

import pydantic
import pytest
from flask.testing import FlaskClient

from api._state import app_state
from lib.config import Settings
from tests.support.db import count

ADMIN = {"x-api-key": "k1"}
BAD = ["a/b", "a b", "é", "a\\b", "a%2Fb", "x" * 256, "", "a\nb", "tab\t"]
GOOD = ["acme", "a:b@c.d-_", "0", "X" * 255]


def refused(response: object, loc: str) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)  # type: ignore[attr-defined]
    error = response.get_json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "validation_error"
    assert [item["loc"] for item in error["details"]] == [loc]


@pytest.mark.parametrize("tenant", BAD)
def test_bad_tenant_ids_are_refused_everywhere(client: FlaskClient, tenant: str) -> None:
    refused(client.post("/api/jobs", json={"type": "noop", "tenantId": tenant}, headers=ADMIN), "tenantId")
    batch = {"jobs": [{"type": "noop"}, {"type": "noop", "tenantId": tenant}]}
    refused(client.post("/api/jobs/batch", json=batch, headers=ADMIN), "jobs.1.tenantId")
    schedule = {"cron": "* * * * *", "type": "noop", "tenantId": tenant}
    refused(client.put("/api/schedules/s", json=schedule, headers=ADMIN), "tenantId")
    if tenant:  # an empty filter is no filter
        refused(client.get("/api/jobs", query_string={"tenantId": tenant}, headers=ADMIN), "tenantId")
    assert count(app_state(client.application).queue) == 0


@pytest.mark.parametrize("tenant", GOOD)
def test_good_tenant_ids_round_trip(client: FlaskClient, tenant: str) -> None:
    made = client.post("/api/jobs", json={"type": "noop", "tenantId": tenant}, headers=ADMIN)
    assert made.status_code == 201 and made.get_json()["tenantId"] == tenant
    listed = client.get("/api/jobs", query_string={"tenantId": tenant}, headers=ADMIN).get_json()
    assert [job["tenantId"] for job in listed["jobs"]] == [tenant]
    erased = client.post(f"/api/tenants/{tenant}/erase", headers=ADMIN)
    assert erased.status_code == 200 and erased.get_json()["deleted"] == 1


@pytest.mark.parametrize("pair", ["a/b:s3cr3t-k3y", "a b:s3cr3t-k3y", f"{'t' * 256}:s3cr3t-k3y"])
def test_a_bad_tenant_in_jobs_tenant_keys_is_a_start_up_problem(pair: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(jobs_tenant_keys=f"acme:k,{pair}")
    text = str(refused.value)
    assert "JOBS_TENANT_KEYS" in text and "a tenant id is 1..255 characters" in text
    assert "s3cr3t" not in text and "a/b" not in text
