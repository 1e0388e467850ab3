"""``python -m lib serve``: the app on a laptop, with the crons of vercel.json emulated.

This is the composition root: the one place in lib/ that loads the Flask app, by module name,
so the layers still run one way (api -> lib) for every import a reader can see.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from ..config import Settings, get_settings
from ..kick import target_from_settings
from .common import configure_logs, migrate_database, safe_url
from .output import EXIT_FAILED, EXIT_OK, error, info

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROCESS_PATH = "/api/jobs/process"
DEFAULT_CRONS = ({"path": PROCESS_PATH, "schedule": "*/5 * * * *"},)
# Vercel Cron's user agent; the emulator's own calls are left out of the request log by it.
CRON_AGENT = "vercel-cron/1.0 (sluice dev server)"


@dataclass(frozen=True)
class Cron:
    path: str
    schedule: str


def run(args: argparse.Namespace) -> int:
    settings, generated_key = settings_with_key()
    configure_logs(args, settings, long_running=True)
    logging.getLogger("sluice").addFilter(skip_idle_drains)
    database = safe_url(settings.database_url)
    if settings.database_url.startswith("sqlite"):
        database += f" (migrated to {migrate_database(settings)})"

    from werkzeug.serving import make_server  # lazy: the dev server only

    # The port is known once bound (--port 0), and the app's kicks need it: bind first, load after.
    app: list[Any] = []

    def dispatch(environ: Any, start_response: Any) -> Any:
        return app[0](environ, start_response)

    try:
        server = make_server(args.host, args.port, dispatch, threaded=True, request_handler=quiet_handler())
    except OSError as exc:
        error(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        return EXIT_FAILED
    base = f"http://{url_host(args.host)}:{server.server_port}"
    settings = kick_self(settings, loopback_base(args.host, server.server_port))
    app.append(load_app())
    problem = startup_problem(app[0])
    crons, origin = read_crons(PROJECT_ROOT / "vercel.json")
    banner(
        base, database=database, generated_key=generated_key, crons=crons, origin=origin, tick=args.tick,
        kick=kick_line(settings),
    )  # fmt: skip
    if problem is not None:
        # Served anyway: health and every API call name the same problem, and fixing the
        # setting and restarting is the way out.
        error(f"{problem}\n  (the API answers 503 with this message until it is fixed)")
    emulator = CronEmulator(loopback_base(args.host, server.server_port), crons, args.tick, settings)
    emulator.start()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        emulator.stop()
        server.server_close()
    print("stopped", flush=True)
    return EXIT_OK


def startup_problem(app: Any) -> str | None:
    """What keeps the app from working, as its health check would say: a setting or handler
    module (JOBS_HANDLER_MODULES) that cannot work, or a database that can't be used as is."""
    state = app.extensions["sluice"]
    problem: str | None = state.problem
    if problem is None:
        found = state.queue.check_database()
        problem = None if found is None else found.message
    return problem


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def skip_idle_drains(record: logging.LogRecord) -> bool:
    """Drop the log line of a drain that found nothing: the emulator's ticks would bury the rest."""
    message = record.getMessage()
    if not message.startswith('{"event":"drain.finish"'):
        return True
    try:
        fields = json.loads(message)
    except ValueError:
        return True
    return any(fields.get(name) for name in ("processed", "retried", "failed"))


def settings_with_key() -> tuple[Settings, str | None]:
    """The settings, with a fresh admin key for this run when none is configured.

    The key goes into the process environment before the app reads its settings, so the app,
    the cron emulator and the banner all agree on it.
    """
    get_settings.cache_clear()
    settings = get_settings()
    if settings.admin_keys:
        return settings, None
    key = secrets.token_urlsafe(24)
    os.environ["JOBS_API_KEYS"] = key
    get_settings.cache_clear()
    return get_settings(), key


def kick_self(settings: Settings, own_base: str) -> Settings:
    """Enqueues kick this very server (lib/kick.py) unless JOBS_KICK is off or a URL is set:
    JOBS_PUBLIC_URL goes into the environment before the app reads its settings."""
    if settings.kick_enabled is False or settings.jobs_public_url:
        return settings
    os.environ["JOBS_PUBLIC_URL"] = own_base
    get_settings.cache_clear()
    return get_settings()


def kick_line(settings: Settings) -> str:
    target = target_from_settings(settings)
    if target is None:
        return "Kick on enqueue: off (JOBS_KICK)"
    every = settings.jobs_kick_min_interval_ms
    return f"Kick on enqueue: POST {target.url} (source kick, at most one per {every} ms)"


def load_app() -> Any:
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    module = importlib.import_module("api.index")
    return module.app


def quiet_handler() -> type[Any]:
    """Werkzeug's request handler, minus log lines for the emulator's own calls."""
    from werkzeug.serving import WSGIRequestHandler  # lazy: the dev server only

    class Handler(WSGIRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if self.headers.get("User-Agent", "") != CRON_AGENT:
                super().log_request(code, size)

    return Handler


def url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - only naming the wildcard, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def loopback_base(host: str, port: int) -> str:
    """Where the emulator calls: loopback unless the server listens on one specific address."""
    return f"http://{url_host(host)}:{port}"


def read_crons(path: Path) -> tuple[list[Cron], str]:
    """The ``crons`` of vercel.json, or the default process cron when the file has none."""
    from croniter import croniter  # lazy: the dev server only

    crons: list[Cron] = []
    try:
        entries = json.loads(path.read_text()).get("crons", [])
    except FileNotFoundError:
        entries = None
    except (ValueError, AttributeError) as exc:
        info(f"warning: ignoring {path.name}: {exc}")
        entries = None
    for entry in entries or ():
        cron_path, schedule = entry.get("path"), entry.get("schedule")
        if isinstance(cron_path, str) and isinstance(schedule, str) and croniter.is_valid(schedule):
            crons.append(Cron(cron_path, schedule))
        else:
            info(f"warning: skipping the cron {entry!r} of {path.name}")
    if crons:
        return crons, path.name
    return [Cron(**entry) for entry in DEFAULT_CRONS], "default"


def banner(
    base: str,
    *,
    database: str,
    generated_key: str | None,
    crons: list[Cron],
    origin: str,
    tick: float,
    kick: str = "",
) -> None:
    key = generated_key or "YOUR_KEY"
    lines = [
        f"Sluice dev server: {base}  (dashboard: {base}/)",
        f"Database: {database}",
        (
            f"API key: {generated_key}"
            if generated_key
            else "API key: configured (JOBS_API_KEYS / JOB_PROCESSOR_API_KEY)"
        ),
    ]
    if generated_key:
        lines.append("  (generated for this run; set JOBS_API_KEYS to keep one)")
    for cron in crons:
        lines.append(f"Cron ({origin}): GET {cron.path} at '{cron.schedule}' (UTC)")
    if tick > 0:
        lines.append(f"Cron (--tick): GET {PROCESS_PATH} every {tick:g} s")
    if kick:
        lines.append(kick)
    lines += [
        "Try:",
        f"  curl -s -X POST {base}/api/jobs -H 'x-api-key: {key}' "
        "-H 'content-type: application/json' -d '{\"type\": \"noop\"}'",
        f"  curl -s {base}/api/jobs/status -H 'x-api-key: {key}'",
        "Ctrl-C to stop.",
    ]
    print("\n".join(lines), flush=True)


class CronEmulator(threading.Thread):
    """Calls the app's own endpoints as Vercel Cron would (GET, with the cron secret as Bearer
    when CRON_SECRET is set, else the admin key), on each cron's schedule and every ``tick`` s."""

    def __init__(self, base: str, crons: list[Cron], tick: float, settings: Settings) -> None:
        super().__init__(name="sluice-cron", daemon=True)
        self.base, self.crons, self.tick = base, crons, tick
        self.stopping = threading.Event()
        if settings.cron_secret:
            self.headers = {"Authorization": f"Bearer {settings.cron_secret}"}
        else:
            self.headers = {"x-api-key": settings.admin_keys[0]}
        self.headers["User-Agent"] = CRON_AGENT
        # Budget plus a margin: a drain answers within its budget.
        self.timeout = settings.jobs_drain_budget_ms / 1000 + 30
        self.last_problem: dict[str, str] = {}

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        from croniter import croniter  # lazy: the dev server only

        now = datetime.now(UTC)
        due = {cron: croniter(cron.schedule, now).get_next(datetime) for cron in self.crons}
        next_tick = time.monotonic() + self.tick if self.tick > 0 else None
        while not self.stopping.is_set():
            waits = [(at - datetime.now(UTC)).total_seconds() for at in due.values()]
            if next_tick is not None:
                waits.append(next_tick - time.monotonic())
            if self.stopping.wait(max(0.0, min(waits))):
                return
            for cron, at in list(due.items()):
                if at <= datetime.now(UTC):
                    self.call(cron.path)
                    due[cron] = croniter(cron.schedule, datetime.now(UTC)).get_next(datetime)
            if next_tick is not None and time.monotonic() >= next_tick:
                self.call(PROCESS_PATH)
                next_tick = time.monotonic() + self.tick

    def call(self, path: str) -> None:
        request = urllib.request.Request(self.base + path, headers=self.headers, method="GET")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as exc:
            self.problem(path, f"HTTP {exc.code} {exc.read()[:200].decode(errors='replace')}")
            return
        except OSError as exc:
            if not self.stopping.is_set():
                self.problem(path, f"{type(exc).__name__}: {exc}")
            return
        self.last_problem.pop(path, None)
        self.report(path, body)

    def problem(self, path: str, text: str) -> None:
        """Print a failing call once, not on every tick."""
        if self.last_problem.get(path) != text:
            self.last_problem[path] = text
            info(f"cron: GET {path} failed: {text}")

    @staticmethod
    def report(path: str, body: bytes) -> None:
        try:
            summary = json.loads(body)
        except ValueError:
            return
        if not isinstance(summary, dict) or not any(
            summary.get(k) for k in ("processed", "retried", "failed")
        ):
            return
        info(
            f"cron: GET {path}: processed {summary.get('processed')} "
            f"({summary.get('succeeded')} succeeded, {summary.get('retried')} retried, "
            f"{summary.get('failed')} failed) in {summary.get('durationMs')} ms"
        )
