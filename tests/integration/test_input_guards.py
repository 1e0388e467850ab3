"""Input that used to be accepted and then failed later, or meant something else on another host:
an http URL whose host has an empty or overlong label (the resolver's IDNA step refuses it on
every attempt), and time zones that are host files rather than IANA zones."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from api._state import app_state
from tests.support.db import count

ADMIN = {"x-api-key": "k1"}


@pytest.mark.parametrize(
    "url",
    [
        "http://a..b/",
        "https://.example.com/",
        "http://a." + "b" * 64 + ".com/",
        "http://" + "a." * 127 + "com/",
    ],
)
def test_http_urls_whose_host_cannot_resolve_are_refused(client: FlaskClient, url: str) -> None:
    answer = client.post("/api/jobs", json={"type": "http", "payload": {"url": url}}, headers=ADMIN)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    error = answer.get_json()["error"]
    assert error["code"] == "validation_error"
    assert [item["loc"] for item in error["details"]] == ["payload.url"]
    assert count(app_state(client.application).queue) == 0


@pytest.mark.parametrize(
    "url", ["https://example.com./hook", "https://b\u00fccher.example/x", "http://a-b.c_d.io/"]
)
def test_unusual_but_valid_hosts_are_still_accepted(client: FlaskClient, url: str) -> None:
    answer = client.post("/api/jobs", json={"type": "http", "payload": {"url": url}}, headers=ADMIN)
    assert answer.status_code == 201, answer.get_data(as_text=True)


@pytest.mark.parametrize(
    "zone",
    [
        "localtime",
        "posixrules",
        "Factory",
        "right/UTC",
        "right/Europe/Paris",
        "posix/Europe/Paris",
        "LOCALTIME",
    ],
)
def test_host_dependent_time_zones_are_refused(client: FlaskClient, zone: str) -> None:
    body = {"cron": "0 2 * * *", "type": "noop", "timezone": zone}
    answer = client.put("/api/schedules/nightly", json=body, headers=ADMIN)
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert [item["loc"] for item in answer.get_json()["error"]["details"]] == ["timezone"]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Etc/GMT+5", "America/Argentina/Buenos_Aires"])
def test_iana_time_zones_are_accepted(client: FlaskClient, zone: str) -> None:
    body = {"cron": "0 2 * * *", "type": "noop", "timezone": zone}
    answer = client.put("/api/schedules/nightly", json=body, headers=ADMIN)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["timezone"] == zone
