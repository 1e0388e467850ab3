"""The CLI as an operator and a newcomer meet it, in child processes: configuration and database
problems named in one line (exit 2), reads that create no database file, jobs read and fixed
one by one or in bulk, and a drain that says when it met job types it has no handler for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.db import create_pg_database, drop_pg_database, make_queue

ROOT = Path(__file__).resolve().parents[2]


def cli(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "JOB_", "CRON_", "DATABASE_"))}
    return subprocess.run(
        [sys.executable, "-m", "lib", *argv],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, nothing on stdout, one ``error:`` line on stderr holding ``words``, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "ops.db"
    path.write_bytes(sqlite_template.read_bytes())
    return f"sqlite:///{path}"


def test_a_typo_in_handler_modules_is_one_line_exit_2(sqlite_url: str) -> None:
    for argv in (("status",), ("drain",), ("enqueue", "noop"), ("list",)):
        done = cli(*argv, DATABASE_URL=sqlite_url, JOBS_HANDLER_MODULES="tests.jobtypez")
        one_line_error(done, "JOBS_HANDLER_MODULES", "'tests.jobtypez'", "does not import")


def test_an_unparsable_setting_is_one_line_naming_it(sqlite_url: str) -> None:
    done = cli("status", DATABASE_URL=sqlite_url, JOBS_LEASE_GRACE_SECONDS="thirty")
    one_line_error(done, "JOBS_LEASE_GRACE_SECONDS")
    done = cli("status", DATABASE_URL="mysql://db/x")
    one_line_error(done, "DATABASE_URL")


def test_sqlite_problems_name_their_cause_and_reads_create_no_file(tmp_path: Path) -> None:
    missing_folder = tmp_path / "nope" / "jobs.db"
    for argv in (("status",), ("get", "01a208cb-a66b-70c3-9a33-9bf0964f8085"), ("list",)):
        done = cli(*argv, DATABASE_URL=f"sqlite:///{missing_folder}")
        one_line_error(done, "DATABASE_URL", "folder", str(missing_folder), "python -m lib migrate")
    assert not missing_folder.parent.exists()

    missing_file = tmp_path / "jobs.db"
    done = cli("status", DATABASE_URL=f"sqlite:///{missing_file}")
    one_line_error(done, "no SQLite database", "python -m lib migrate")
    assert not missing_file.exists()

    empty = tmp_path / "empty.db"
    sa.create_engine(f"sqlite:///{empty}").connect().close()  # an existing, unmigrated file
    done = cli("status", DATABASE_URL=f"sqlite:///{empty}")
    one_line_error(done, "not migrated", "run `python -m lib migrate`")

    # Migrating is what creates the database, folder included.
    assert cli("migrate", DATABASE_URL=f"sqlite:///{missing_folder}").returncode == 0
    assert cli("status", DATABASE_URL=f"sqlite:///{missing_folder}").returncode == 0


def test_postgresql_problems_name_their_cause(pg_server: str) -> None:
    server = pg_server.rsplit("/", 1)[0]
    done = cli("status", DATABASE_URL=f"{server}/sluice_no_such_db_here")
    one_line_error(done, "DATABASE_URL", 'database "sluice_no_such_db_here" does not exist', "migrate")
    nobody = server.replace("postgres@", "sluice_no_such_role@")
    done = cli("status", DATABASE_URL=f"{nobody}/test")
    one_line_error(done, "DATABASE_URL", "authentication failed", "sluice_no_such_role")
    url = create_pg_database(pg_server, "sluice_unmigrated")
    try:
        for argv in (("status",), ("drain",), ("enqueue", "noop"), ("list",)):
            one_line_error(cli(*argv, DATABASE_URL=url), "not migrated", "run `python -m lib migrate`")
    finally:
        drop_pg_database(pg_server, url)
    done = cli("status", DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    assert done.returncode == 3 and "unreachable" in done.stderr and "Traceback" not in done.stderr


def test_a_drain_of_unknown_types_warns_on_stderr(sqlite_url: str) -> None:
    queue = make_queue(sqlite_url)
    queue.enqueue("test.greet", {"name": "ada"})
    queue.enqueue("test.fail", {})
    queue.engine.dispose()
    done = cli("drain", DATABASE_URL=sqlite_url)  # no JOBS_HANDLER_MODULES: the types are unknown
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["processed"] == 2
    warning = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1, done.stderr
    assert "'test.fail', 'test.greet'" in warning[0] and "JOBS_HANDLER_MODULES" in warning[0]
    again = cli("drain", DATABASE_URL=sqlite_url, JOBS_HANDLER_MODULES="tests.jobtypes")
    assert "warning" not in again.stderr


def run_json(*argv: str, **env: str) -> Any:
    done = cli(*argv, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_get_list_retry_and_cancel(sqlite_url: str) -> None:
    env = {"DATABASE_URL": sqlite_url, "JOBS_HANDLER_MODULES": "tests.jobtypes"}
    queue = make_queue(sqlite_url)
    failed = [queue.enqueue("test.permanent", {}) for _ in range(3)]
    waiting = [queue.enqueue("noop", {}, delay_seconds=3600) for _ in range(2)]
    queue.drain()
    try:
        job = run_json("get", failed[0].id, "--attempts", **env)
        assert job["status"] == "failed" and job["attempts"][0]["outcome"] == "failed"
        assert "PermanentError" in job["attempts"][0]["traceback"]
        assert job["steps"] == []
        page = run_json("list", "--status", "failed", **env)
        assert {item["id"] for item in page["jobs"]} == {j.id for j in failed}

        dry = cli("retry", "--type", "test.permanent", "--status", "failed", "--dry-run", **env)
        assert json.loads(dry.stdout) == {"matched": 3, "changed": 0}
        assert "3 job(s) would be retried" in dry.stderr
        assert queue.get(failed[0].id).status == "failed"
        assert run_json("retry", "--type", "test.permanent", **env) == {"matched": 3, "changed": 3}
        assert all(queue.get(j.id).status == "pending" for j in failed)

        assert run_json("cancel", waiting[0].id, **env)["status"] == "cancelled"
        assert run_json("cancel", waiting[1].id, failed[0].id, **env) == {"matched": 2, "changed": 2}
        done = cli("cancel", waiting[0].id, **env)
        assert done.returncode == 1 and "only pending jobs can be cancelled" in done.stderr
        done = cli("get", "01a208cb-a66b-70c3-9a33-9bf0964f8085", **env)
        assert done.returncode == 1 and "no job" in done.stderr
        one_line_error(cli("retry", **env), "at least one filter")
    finally:
        queue.engine.dispose()
