"""The command line: one argparse parser, one dispatcher, exit codes that scripts can rely on.

Heavy imports (alembic, werkzeug, the Flask app, croniter) happen inside the commands that need
them, so ``python -m lib --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import pydantic
import sqlalchemy as sa

from ..config import get_settings, settings_problem
from ..db import explain
from ..errors import ConfigError, SluiceError, Unavailable, ValidationError
from ..models import JOB_STATUSES
from . import commands
from .output import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE, error

EPILOG = """\
exit codes:
  0    ok (a drain whose jobs failed is still 0: the drain itself worked)
  1    the operation failed (no such job or schedule, wrong state, ...)
  2    usage or validation error, or configuration that cannot work (bad arguments,
       bad payload JSON, unknown job type, an invalid setting, a handler module that
       does not import, a database that is missing, not migrated or refuses the login)
  3    the database is unreachable
  130  interrupted (Ctrl-C)

Settings come from environment variables (DATABASE_URL, JOBS_API_KEYS, ...), as for the app.
Results are JSON on stdout; messages and progress go to stderr.
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


Command = Callable[[str, str], argparse.ArgumentParser]


def add_job_commands(command: Command) -> None:
    """get, list, and retry/cancel (one job, or many by filter)."""
    get = command("get", "print one job as JSON (--attempts adds its attempt history)")
    get.add_argument("id", metavar="ID", help="the job's id")
    get.add_argument("--attempts", action="store_true", help="add the attempts, with tracebacks, and steps")
    get.set_defaults(handler=commands.get)

    listing = command("list", "print a page of jobs as JSON, newest first")
    listing.add_argument("--status", choices=JOB_STATUSES, default=None)
    listing.add_argument("--type", default=None, help="only jobs of this type")
    listing.add_argument("--tenant", default=None, help="only this tenant's jobs")
    listing.add_argument("--limit", type=_positive, default=50, help="page size, 1..500 (default 50)")
    listing.add_argument("--cursor", default=None, help="nextCursor of the previous page")
    listing.set_defaults(handler=commands.list_jobs)

    for verb, does in (
        ("retry", "retry failed or cancelled jobs: one by ID, or many by filter"),
        ("cancel", "cancel pending jobs: one by ID, or many by filter"),
    ):
        bulk = command(verb, does)
        bulk.add_argument("ids", nargs="*", metavar="ID", help="job ids (one id alone: that job, as JSON)")
        bulk.add_argument("--status", choices=JOB_STATUSES, default=None)
        bulk.add_argument("--type", default=None, help="only jobs of this type")
        bulk.add_argument("--tenant", default=None, help="only this tenant's jobs")
        bulk.add_argument("--created-before", default=None, metavar="TIME", help="ISO 8601 time with offset")
        bulk.add_argument("--limit", type=_positive, default=None, help="at most this many (default 1000)")
        bulk.add_argument("--dry-run", action="store_true", help="count what would change, change nothing")
        bulk.set_defaults(handler=commands.bulk, verb=verb)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lib",
        description="Sluice: a job queue kept in PostgreSQL or SQLite, drained by cron.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log every job as a JSON line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    migrate = command("migrate", "apply the database migrations to DATABASE_URL (idempotent)")
    migrate.set_defaults(handler=commands.migrate)

    serve = command("serve", "run the app locally (embedded SQLite by default) with a cron emulator")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serve.add_argument(
        "--tick",
        type=_non_negative,
        default=10.0,
        help="also call /api/jobs/process every TICK seconds, besides vercel.json's crons (0: off)",
    )
    serve.set_defaults(handler=commands.serve)

    drain = command("drain", "run due jobs now and print the summary")
    drain.add_argument("--max-jobs", type=_positive, default=10, help="jobs to run at most (default 10)")
    drain.add_argument(
        "--budget-ms", type=_positive, default=None, help="time budget (default JOBS_DRAIN_BUDGET_MS)"
    )
    drain.add_argument("--loop", action="store_true", help="keep draining until SIGINT/SIGTERM (a worker)")
    drain.add_argument(
        "--interval",
        type=_non_negative,
        default=5.0,
        help="with --loop: poll every S seconds when idle (PostgreSQL also wakes on enqueues; default 5)",
    )
    drain.set_defaults(handler=commands.drain)

    status = command("status", "print the queue overview as JSON")
    status.add_argument("--tenant", default=None, help="count only this tenant's jobs")
    status.set_defaults(handler=commands.status)

    enqueue = command("enqueue", "enqueue one job and print it as JSON")
    enqueue.add_argument("type", metavar="TYPE", help="a registered job type, e.g. noop")
    enqueue.add_argument("--payload", default="{}", help="a JSON object, or - to read it from stdin")
    enqueue.add_argument("--delay", type=int, default=None, metavar="S", help="run after S seconds")
    enqueue.add_argument("--run-at", default=None, metavar="TIME", help="ISO 8601 time with offset")
    enqueue.add_argument("--priority", type=int, default=None, metavar="N", help="-1000..1000, higher first")
    enqueue.add_argument("--idempotency-key", default=None, metavar="K", help="enqueue at most once per key")
    enqueue.add_argument("--tenant", default=None, help="the job's tenantId")
    enqueue.set_defaults(handler=commands.enqueue)

    add_job_commands(command)

    cleanup = command("cleanup", "delete finished jobs past their retention (see README)")
    cleanup.add_argument("--completed-older-than", type=int, default=None, metavar="S")
    cleanup.add_argument("--failed-older-than", type=int, default=None, metavar="S")
    cleanup.add_argument("--cancelled-older-than", type=int, default=None, metavar="S")
    cleanup.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    cleanup.set_defaults(handler=commands.cleanup)

    schedules = command("schedules", "list schedules, or show, create, replace or delete one")
    schedules.add_argument("action", nargs="?", default="list", choices=("list", "get", "put", "delete"))
    schedules.add_argument("name", nargs="?", default=None, help="the schedule's name (get, put, delete)")
    schedules.add_argument("--body", default=None, help="put: the schedule as JSON (as the API takes it)")
    schedules.set_defaults(handler=commands.schedules)

    add_erase(command)

    rotate = command(
        "rotate-keys",
        "re-encrypt stored sensitive payload fields with the first key of JOBS_ENCRYPTION_KEYS",
    )
    rotate.add_argument("--batch-size", type=_positive, default=500, help="rows per transaction (500)")
    rotate.set_defaults(handler=commands.rotate_keys)
    return parser


def add_erase(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    erase = command(
        "erase",
        "erase a tenant: its jobs (not processing ones), its schedules and its rows in the archive",
    )
    erase.add_argument("tenant", metavar="TENANT", help="the tenant id")
    erase.set_defaults(handler=commands.erase)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`... | head`): silence the flush at exit instead of a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except pydantic.ValidationError as exc:
        # Only settings reach here: the commands turn their own input errors into ValidationError.
        error(f"invalid settings: {settings_problem(exc)}")
        return EXIT_USAGE
    except (ValidationError, ConfigError) as exc:
        error(exc.message, exc.details)
        return EXIT_USAGE
    except Unavailable as exc:
        error(exc.message)
        return EXIT_UNAVAILABLE
    except sa.exc.DBAPIError as exc:
        # Migrations and a few maintenance commands talk to the database outside the queue's guards.
        return _database_error(exc)
    except SluiceError as exc:
        error(exc.message, exc.details)
        return EXIT_FAILED
    return code


def _database_error(exc: sa.exc.DBAPIError) -> int:
    explained = explain(exc, get_settings().database_url)
    if isinstance(explained, ConfigError):
        error(explained.message)
        return EXIT_USAGE
    if explained is None and not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        raise exc
    error(explained.message if explained else f"the database is unreachable: {_first_lines(exc.orig or exc)}")
    return EXIT_UNAVAILABLE


def _first_lines(exc: BaseException, lines: int = 3) -> str:
    return " | ".join(str(exc).strip().splitlines()[:lines])
