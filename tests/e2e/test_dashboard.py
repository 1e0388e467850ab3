"""The dashboard in Debian's Chromium (Playwright): login, live counts, drain, retry from the
detail view, search, focus handling, and a phone-width layout. Never downloads a browser."""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lib import Queue
from tests.e2e.appserver import ADMIN_KEY, TENANT_KEY, serve_app, settings_for, sqlite_copy
from tests.support.db import IN_CI, make_queue

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

if not os.path.exists(CHROMIUM) and not IN_CI:
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def site(sqlite_template: Path, tmp_path: Path) -> Iterator[tuple[str, Queue]]:
    url = sqlite_copy(sqlite_template, tmp_path)
    queue = make_queue(url)
    with serve_app(settings_for(url)) as base:
        yield base, queue
    queue.engine.dispose()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    yield page
    context.close()
    # Chromium logs every 4xx answer (a refused key, an unknown id) as "Failed to load resource";
    # the page handles those. No script error and no other console error may happen.
    assert [p for p in problems if not p.startswith("Failed to load resource")] == []


def enqueue(base: str, body: dict[str, Any], key: str = ADMIN_KEY) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/api/jobs",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"x-api-key": key, "content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        job: dict[str, Any] = json.loads(response.read())
        return job


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_without_a_key_only_the_login_shows_and_a_wrong_key_stays_there(
    page: Page, site: tuple[str, Queue]
) -> None:
    base, _ = site
    page.goto(base + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.get_by_role("button", name="Run a drain")).to_be_hidden()
    expect(page.get_by_label("API key")).to_be_focused()

    sign_in(page, "not-the-key")
    expect(page.get_by_role("alert").filter(has_text="not valid")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.get_by_label("API key")).to_have_attribute("aria-invalid", "true")
    assert page.evaluate("sessionStorage.length") == 0

    # Every form control has a label a screen reader can announce.
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(e => !e.labels || !e.labels.length).length"
    )
    assert unlabelled == 0


def test_counts_drain_retry_search_and_layout(page: Page, site: tuple[str, Queue]) -> None:
    base, queue = site
    page.goto(base + "/dashboard")
    sign_in(page, ADMIN_KEY)
    expect(page.locator("#app")).to_be_visible()
    expect(page.locator("#role")).to_have_text("admin key")
    expect(page.locator("#count-pending")).to_have_text("0")
    assert page.evaluate("sessionStorage.getItem('sluice.apiKey')") == ADMIN_KEY

    enqueue(base, {"type": "noop"})
    enqueue(base, {"type": "test.greet", "payload": {"name": "dash"}})
    doomed = enqueue(base, {"type": "test.fail", "maxAttempts": 1, "tenantId": "acme"})
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#count-pending")).to_have_text("3")
    expect(page.locator("#ready")).to_have_text("3")
    expect(page.locator("#types tbody tr")).to_have_count(3)

    page.get_by_role("button", name="Run a drain").click()
    expect(page.get_by_role("status").filter(has_text="processed 3")).to_be_visible()
    expect(page.locator("#count-completed")).to_have_text("2")
    expect(page.locator("#count-failed")).to_have_text("1")
    expect(page.locator("#last-drain")).to_contain_text("api · 3 jobs")
    expect(page.locator("#chart svg rect.bar-ok")).to_have_count(1)
    expect(page.locator("#chart-caption")).to_contain_text("2 completed")

    # The failed card filters the list; the job's detail shows its error; Retry puts it back.
    page.get_by_role("button", name="1 failed: show these jobs").click()
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(1)
    opener = page.get_by_role("button", name=f"Show job {doomed['id']}")
    opener.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#detail-title")).to_be_focused()
    expect(page.locator("#detail-last-error")).to_have_text("RuntimeError: boom")
    expect(page.locator("#detail-payload")).to_have_text("{}")
    expect(page.get_by_role("button", name="Cancel job")).to_be_disabled()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-detail.png"))
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    page.get_by_role("button", name="Retry", exact=True).click()
    expect(dialog.locator(".status")).to_have_text("pending")
    job = queue.get(doomed["id"])
    assert (job.status, job.attempts, job.last_error) == ("pending", 0, "RuntimeError: boom")
    expect(page.get_by_role("button", name="Retry", exact=True)).to_be_disabled()
    page.get_by_role("button", name="Close job details").click()
    expect(dialog).to_be_hidden()
    # The job left the failed list, so focus lands on the list's heading instead.
    expect(rows).to_have_count(0)
    expect(page.locator("#jobs-title")).to_be_focused()

    # Search: by tenant, by type, by id (an unknown id says so).
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Tenant", exact=True).fill("acme")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    page.get_by_role("button", name="Clear").click()
    expect(rows).to_have_count(3)
    page.get_by_label("Type", exact=True).fill("test.greet")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("completed")
    page.get_by_role("button", name="Clear").click()
    page.get_by_label("Job id").fill(doomed["id"])
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    page.get_by_label("Job id").fill("01a20000-0000-7000-8000-000000000000")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#jobs-message")).to_have_text("No job has that id.")
    page.get_by_role("button", name="Clear").click()
    expect(rows).to_have_count(3)

    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    expect(rows.first.locator("td").first).to_be_visible()
    # The chart is redrawn at the narrower width (so its labels keep their size).
    expect(page.locator("#chart svg")).to_have_attribute("viewBox", re.compile(r"^0 0 3[0-6]\d 170$"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(ARTIFACTS / "dashboard-390.png"), full_page=True)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_tenant_key_sees_its_jobs_and_no_drain_button(page: Page, site: tuple[str, Queue]) -> None:
    base, _ = site
    enqueue(base, {"type": "noop", "tenantId": "globex"})
    enqueue(base, {"type": "noop"}, key=TENANT_KEY)
    page.goto(base + "/")
    sign_in(page, TENANT_KEY)
    expect(page.locator("#role")).to_have_text("tenant key")
    expect(page.locator("#count-pending")).to_have_text("1")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.get_by_role("button", name="Run a drain")).to_be_hidden()

    # A reload keeps the session (sessionStorage); a rotated-away key goes back to the login.
    page.reload()
    expect(page.locator("#count-pending")).to_have_text("1")
    page.evaluate("sessionStorage.setItem('sluice.apiKey', 'revoked')")
    page.reload()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.get_by_role("alert").filter(has_text="no longer accepted")).to_be_visible()


def test_the_job_page_shows_attempts_tracebacks_and_step(page: Page, site: tuple[str, Queue]) -> None:
    base, queue = site
    failing = enqueue(base, {"type": "test.explode", "payload": {"secret": "hunter2-SECRET"}})
    greeted = enqueue(base, {"type": "test.greet", "payload": {"name": "ada"}})
    queue.drain()
    page.goto(base + "/")
    sign_in(page, ADMIN_KEY)
    page.get_by_label("Job id").fill(failing["id"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Show job {failing['id']}").click()
    attempts = page.locator("#detail-attempts li")
    expect(attempts).to_have_count(1)
    expect(attempts.first).to_contain_text("Attempt 1")
    expect(attempts.first).to_contain_text("retried")
    expect(attempts.first.locator(".attempt-error")).to_have_text("ValueError: length 14 is not allowed")
    traceback = attempts.first.locator("pre.traceback")
    expect(traceback).to_be_hidden()
    attempts.first.locator("summary").click()
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text("in _check_length")
    expect(traceback).not_to_contain_text("hunter2")
    page.screenshot(path=str(ARTIFACTS / "dashboard-attempts.png"))
    page.get_by_role("button", name="Close job details").click()

    page.get_by_label("Job id").fill(greeted["id"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Show job {greeted['id']}").click()
    expect(page.locator("#detail-progress-text")).to_have_text("100%")
    expect(page.locator("#detail-step")).to_have_text("halfway")
    expect(page.locator("#detail-attempts li")).to_have_count(1)
    expect(page.locator("#detail-attempts li").first).to_contain_text("completed")


def test_the_job_page_lists_durable_steps(page: Page, site: tuple[str, Queue], tmp_path: Path) -> None:
    base, queue = site
    sleeper = enqueue(base, {"type": "test.steps", "payload": {"file": str(tmp_path / "s.log"), "sleep": 60}})
    plain = enqueue(base, {"type": "test.greet", "payload": {"name": "ada"}})
    queue.drain()
    page.goto(base + "/")
    sign_in(page, ADMIN_KEY)
    page.get_by_label("Job id").fill(sleeper["id"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Show job {sleeper['id']}").click()
    steps = page.locator("#detail-steps li")
    expect(steps).to_have_count(3)
    expect(steps.nth(0)).to_contain_text("one")
    expect(steps.nth(0)).to_contain_text("25 B")
    expect(steps.nth(2)).to_contain_text("sleep#1")
    expect(page.locator("#detail-attempts li").first).to_contain_text("deferred")
    page.get_by_role("button", name="Close job details").click()

    page.get_by_label("Job id").fill(plain["id"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Show job {plain['id']}").click()
    expect(page.locator("#detail-steps-empty")).to_have_text("No durable step has finished.")
    expect(page.locator("#detail-steps li")).to_have_count(0)


def test_the_job_page_shows_concurrency_key_and_dependencies(page: Page, site: tuple[str, Queue]) -> None:
    base, _ = site
    first = enqueue(base, {"type": "test.greet", "payload": {"name": "a"}})
    body = {
        "type": "test.greet",
        "payload": {"name": "b"},
        "after": [first["id"]],
        "concurrencyKey": "user-7",
    }
    second = enqueue(base, {**body, "concurrencyLimit": 3})
    page.goto(base + "/")
    sign_in(page, ADMIN_KEY)
    page.get_by_label("Job id").fill(second["id"])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name=f"Show job {second['id']}").click()
    fields = page.locator("#detail-fields")
    expect(fields).to_contain_text("user-7 (at most 3 at once)")
    expect(fields).to_contain_text(f"Runs after{first['id']}")


def test_bulk_retry_shows_the_count_before_confirming(page: Page, site: tuple[str, Queue]) -> None:
    base, queue = site
    failed = [enqueue(base, {"type": "test.permanent"}) for _ in range(3)]
    enqueue(base, {"type": "test.fail", "maxAttempts": 1})
    queue.drain()
    page.goto(base + "/")
    sign_in(page, ADMIN_KEY)

    # Without a filter, nothing is offered: bulk actions never mean "every job".
    page.get_by_role("button", name="Retry matching jobs…").click()
    expect(page.locator("#bulk-message")).to_contain_text("Search by status, type, tenant or id first")

    page.get_by_label("Type", exact=True).fill("test.permanent")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Retry matching jobs…").click()
    expect(page.locator("#bulk-question")).to_have_text(
        "3 jobs will be retried (pending again, attempts reset). Go ahead?"
    )
    assert all(queue.get(job["id"]).status == "failed" for job in failed)  # the count was a dry run
    page.get_by_role("button", name="Keep them").click()
    expect(page.locator("#bulk-confirm")).to_be_hidden()
    assert all(queue.get(job["id"]).status == "failed" for job in failed)

    page.get_by_role("button", name="Retry matching jobs…").click()
    page.get_by_role("button", name="Retry 3").click()
    expect(page.locator("#bulk-message")).to_have_text("3 jobs retried.")
    assert all(queue.get(job["id"]).status == "pending" for job in failed)
    expect(page.locator("#count-pending")).to_have_text("3")
    expect(page.locator("#count-failed")).to_have_text("1")

    page.get_by_role("button", name="Cancel matching jobs…").click()
    page.get_by_role("button", name="Cancel 3").click()
    expect(page.locator("#bulk-message")).to_have_text("3 jobs cancelled.")
    expect(page.locator("#count-cancelled")).to_have_text("3")


def test_a_misconfigured_server_says_what_is_wrong_at_sign_in(
    page: Page, sqlite_template: Path, tmp_path: Path
) -> None:
    url = sqlite_copy(sqlite_template, tmp_path)
    with serve_app(settings_for(url, jobs_handler_modules="tests.jobtypes,app.missing_jobs")) as base:
        page.goto(base + "/")
        sign_in(page, ADMIN_KEY)
        alert = page.get_by_role("alert").filter(has_text="JOBS_HANDLER_MODULES")
        expect(alert).to_contain_text("'app.missing_jobs' does not import")
        expect(page.locator("#app")).to_be_hidden()
