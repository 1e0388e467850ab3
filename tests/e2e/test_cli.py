"""``python -m lib``: commands, JSON output and exit codes, on real SQLite files (and a real
worker process for ``drain --loop``)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from lib.cli import main
from lib.cli.output import Progress
from lib.config import get_settings
from tests.support.cli import run
from tests.support.db import count, make_queue

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_PG = "postgresql://postgres@127.0.0.1:1/nothing"


def child_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "JOB_", "CRON_"))}
    env.update(DATABASE_URL=url, JOBS_HANDLER_MODULES="tests.jobtypes", PYTHONUNBUFFERED="1")
    return env


def test_help_is_fast_and_documents_exit_codes() -> None:
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['python -m lib', '--help']\n"
        "try:\n    runpy.run_module('lib', run_name='__main__')\n"
        "except SystemExit as exc:\n    code = exc.code\n"
        "heavy = ('flask', 'alembic', 'boto3', 'werkzeug', 'prometheus_client')\n"
        "print('RESULT', code, [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert "RESULT 0 []" in done.stdout
    assert "exit codes:" in done.stdout
    for line in (
        "0    ok",
        "1    the operation failed",
        "2    usage or validation error",
        "3    the database",
    ):
        assert line in done.stdout
    for command in ("migrate", "serve", "drain", "status", "enqueue", "cleanup", "schedules"):
        assert command in done.stdout


def test_migrate_is_idempotent(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'new.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    for _ in range(2):
        code, out, err = run(capsys, "migrate")
        assert (code, out) == (0, None)
        assert "is at revision" in err
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        versions = conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one()
    engine.dispose()
    assert {"sluice_jobs", "sluice_drains", "sluice_schedules"} <= tables
    assert versions == 1
    get_settings.cache_clear()


def test_enqueue_drain_status(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, job, _ = run(capsys, "enqueue", "test.greet", "--payload", '{"name": "cli"}')
    assert code == 0 and job["status"] == "pending" and job["payload"] == {"name": "cli", "times": 1}
    code, doomed, _ = run(capsys, "enqueue", "test.permanent")
    assert code == 0

    code, summary, _ = run(capsys, "drain")
    # A drain whose jobs failed still worked: exit 0, the failure is in the summary.
    assert code == 0
    assert summary == summary | {
        "processed": 2,
        "succeeded": 1,
        "failed": 1,
        "remaining": 0,
        "stoppedBy": "empty",
    }
    queue = make_queue(env)
    assert queue.get(job["id"]).status == "completed"
    assert queue.get(doomed["id"]).status == "failed"
    assert count(queue, "status = 'failed'") == 1
    with queue.engine.connect() as conn:
        sources = conn.execute(sa.text("SELECT source FROM sluice_drains")).scalars().all()
    queue.engine.dispose()
    assert sources == ["cli"]

    code, status, _ = run(capsys, "status")
    assert code == 0
    assert status["counts"] == {"pending": 0, "processing": 0, "completed": 1, "failed": 1, "cancelled": 0}
    assert status["lastDrain"]["source"] == "cli"
    assert doomed["id"] not in {j["id"] for j in status["pending"]}


def test_enqueue_options(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, later, _ = run(capsys, "enqueue", "noop", "--delay", "600", "--priority", "7", "--tenant", "acme")
    assert code == 0 and later["priority"] == 7 and later["tenantId"] == "acme"
    assert later["runAt"] > later["createdAt"]
    code, first, err = run(capsys, "enqueue", "noop", "--idempotency-key", "k1")
    assert code == 0 and err == ""
    code, again, err = run(capsys, "enqueue", "noop", "--idempotency-key", "k1")
    assert code == 0 and again["id"] == first["id"] and "exists already" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"name": "stdin"}'))
    code, piped, _ = run(capsys, "enqueue", "test.greet", "--payload", "-")
    assert code == 0 and piped["payload"]["name"] == "stdin"
    code, status, _ = run(capsys, "status")
    assert (status["ready"], status["scheduled"]) == (2, 1)
    queue = make_queue(env)
    assert count(queue) == 3
    queue.engine.dispose()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("enqueue", "no.such.type"), "unknown job type"),
        (("enqueue", "noop", "--payload", "{bad"), "not valid JSON"),
        (("enqueue", "noop", "--payload", "[1, 2]"), "must be a JSON object"),
        (("enqueue", "noop", "--payload", '{"x": NaN}'), "not valid JSON"),
        (("enqueue", "test.greet", "--payload", "{}"), "payload.name"),
        (("enqueue", "noop", "--delay", "-5"), "delaySeconds"),
        (("enqueue", "noop", "--run-at", "2026-01-01T00:00:00"), "runAt"),
        (("schedules", "put", "x", "--body", '{"cron": "61 * * * *", "type": "noop"}'), "cron"),
        (("schedules", "get"), "needs a NAME"),
    ],
)
def test_validation_errors_exit_2(
    env: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, None)
    assert message in err
    queue = make_queue(env)
    assert count(queue) == 0
    queue.engine.dispose()


def test_bad_arguments_exit_2(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["drain", "--max-jobs", "0"], ["nonsense"], ["enqueue"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
    capsys.readouterr()


def test_failures_exit_1_and_unreachable_database_exits_3(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(capsys, "schedules", "get", "nope")
    assert code == 1 and "no schedule" in err
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE_PG)
    for argv in (("status",), ("migrate",), ("drain",), ("enqueue", "noop")):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (3, None), argv
        assert "unavailable" in err or "unreachable" in err
    monkeypatch.setenv("DATABASE_URL", "mysql://somewhere/db")
    code, _, err = run(capsys, "status")
    assert code == 2 and "DATABASE_URL" in err


def test_long_drain_runs_in_chunks_with_progress(
    env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(env)
    for _ in range(5):
        queue.enqueue("noop")
    monkeypatch.setenv("JOBS_BATCH_SIZE", "2")
    code, summary, err = run(capsys, "drain", "--max-jobs", "4")
    assert code == 0
    assert summary == summary | {"processed": 4, "succeeded": 4, "remaining": 1, "stoppedBy": "maxJobs"}
    # stderr is not a terminal here: plain lines, one per chunk.
    assert [line.split(",")[0] for line in err.splitlines()] == ["drain: 2/4 jobs", "drain: 4/4 jobs"]
    assert count(queue, "status = 'completed'") == 4
    with queue.engine.connect() as conn:
        chunks = conn.execute(sa.text("SELECT processed FROM sluice_drains ORDER BY id")).scalars().all()
    assert chunks == [2, 2]

    code, summary, _ = run(capsys, "drain", "--max-jobs", "10")
    assert summary == summary | {"processed": 1, "remaining": 0, "stoppedBy": "empty"}
    queue.engine.dispose()


def test_progress_on_a_terminal_redraws_one_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(10, stream)
    progress.update(5)
    progress.update(10, failed=1)
    progress.finish()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "5/10 jobs" in text and "10/10 jobs, 1 failed" in text


def test_schedules_round_trip(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    body = '{"cron": "0 3 * * *", "timezone": "Europe/Paris", "type": "noop"}'
    code, made, _ = run(capsys, "schedules", "put", "nightly", "--body", body)
    assert code == 0 and made["name"] == "nightly" and made["nextRunAt"].endswith(":00:00Z")
    code, listed, _ = run(capsys, "schedules")
    assert [s["name"] for s in listed["schedules"]] == ["nightly"]
    code, _, err = run(capsys, "schedules", "delete", "nightly")
    assert code == 0 and "deleted" in err
    code, listed, _ = run(capsys, "schedules", "list")
    assert listed == {"schedules": []}


def test_cleanup(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    queue = make_queue(env)
    for _ in range(3):
        queue.enqueue("noop")
    queue.enqueue("noop", delay_seconds=600)
    queue.drain()
    code, counted, _ = run(capsys, "cleanup", "--completed-older-than", "0", "--dry-run")
    assert code == 0 and counted["deleted"] == {"completed": 3, "failed": 0, "cancelled": 0}
    assert count(queue) == 4
    code, done, _ = run(capsys, "cleanup", "--completed-older-than", "0")
    assert code == 0 and done["deleted"]["completed"] == 3 and done["archived"] == 0
    assert count(queue) == 1 and count(queue, "status = 'pending'") == 1
    code, out, err = run(capsys, "cleanup", "--failed-older-than", "-1")
    assert (code, out) == (2, None) and "failedOlderThanSeconds" in err
    queue.engine.dispose()


def test_drain_loop_is_a_worker_that_stops_on_sigterm(env: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "lib", "drain", "--loop", "--interval", "0.2"],
        cwd=ROOT,
        env=child_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    queue = make_queue(env)
    try:
        job = queue.enqueue("test.greet", {"name": "worker"})
        deadline = time.monotonic() + 20
        while queue.get(job.id).status != "completed":
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker never ran the job"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        queue.engine.dispose()
    assert worker.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert sum(line["succeeded"] for line in lines) == 1
    assert "SIGTERM" in err and err.rstrip().endswith("stopped")
    assert count(queue, "status = 'completed'") == 1
