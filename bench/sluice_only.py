"""Issue 7's Sluice-only cases: each measured here, on this machine, and checked against its target.

Every case returns `Check` rows for the "Sluice cases" table (case | figure | target | met?).
Cases 1 and 2a are computed from the peers table's rows; the others make their own fresh
PostgreSQL databases (always dropped) and start their own subprocesses (always stopped).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

import psycopg

from bench import server, wakeup
from bench.pgutil import ADMIN_DSN, analyze, fresh_database
from bench.server import REPO, Client, gunicorn
from bench.sluice_cases import SLUICE_NAME, close_queue, drain_all, enqueue_noops

if TYPE_CHECKING:
    from lib import Queue

RAW_NAME = "raw SQL (limit)"
PGQUEUER_NAME = "pgqueuer"


@dataclass(frozen=True)
class Check:
    case: str
    figure: str
    target: str = "report"
    met: bool | None = None  # None: nothing to meet (report only, n/a, error)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sizes:
    """Every case's size, from the command line (defaults: issue 7's)."""

    http_jobs: int = 20_000
    http_batch: int = 1000
    drain_max_jobs: int = 5000
    latency_requests: int = 2000
    latency_threads: int = 8
    finished_rows: int = 1_000_000
    table_jobs: int = 20_000
    rss_jobs: int = 10_000
    import_runs: int = 5
    sqlite_jobs: int = 20_000
    fanout_backlog: int = 100_000
    fanouts: tuple[int, ...] = (1, 4, 16)
    fanout_budget_ms: int = 5000
    wake_enqueues: int = 200  # cases 10 and 11
    quiet_compare: bool = True  # case 3: also drain with JOBS_LOG_LEVEL=WARNING, for the notes


@dataclass
class Context:
    sizes: Sizes
    # jobs/s (enqueue, drain) of the peers table's rows, by system name; None = not measured.
    rates: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    api_problem: str | None = None  # why api.index does not import, once checked

    def api_missing(self) -> str | None:
        return self.api_problem


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _fmt(rate: float) -> str:
    return f"{rate:,.0f}"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _migrated_queue(url: str) -> Queue:
    import lib

    q = lib.Queue.from_url(url)
    q.migrate()
    return q


def _backlog(dsn: str, n: int) -> None:
    """A migrated database holding ``n`` ready no-op jobs, analysed (untimed) like the peers'."""
    q = _migrated_queue(dsn)
    try:
        enqueue_noops(q, n)
    finally:
        close_queue(q)
    analyze(dsn)


def _counts(dsn: str) -> dict[str, int]:
    """Jobs by status, plus those completed more than once (attempts != 1)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*),"
            " count(*) FILTER (WHERE status = 'completed'),"
            " count(*) FILTER (WHERE status = 'completed' AND attempts <> 1),"
            " count(*) FILTER (WHERE status = 'failed'),"
            " count(*) FILTER (WHERE status = 'processing'),"
            " count(*) FILTER (WHERE status = 'pending'),"
            " (SELECT count(*) FROM sluice_drains),"
            " (SELECT coalesce(sum(succeeded), 0) FROM sluice_drains)"
            " FROM sluice_jobs"
        ).fetchone()
    assert row is not None
    keys = ("total", "completed", "repeated", "failed", "processing", "pending", "drains", "succeeded")
    return dict(zip(keys, (int(v) for v in row), strict=True))


# ------------------------------------------------------------------ 1, 2a: from the peers table


def case_drain_ratios(ctx: Context) -> list[Check]:
    sluice = ctx.rates.get(SLUICE_NAME, (None, None))[1]
    out = []
    for name, factor, label in ((RAW_NAME, 0.5, "raw SQL"), (PGQUEUER_NAME, 8.0, "pgqueuer")):
        case = f"1. in-process drain (PostgreSQL) vs {label}"
        target = f"≥ {factor:g}× {label}"
        peer = ctx.rates.get(name, (None, None))[1]
        if sluice is None or peer is None:
            out.append(Check(case, f"n/a (row {SLUICE_NAME!r} or {name!r} not measured)", target))
            continue
        ratio = sluice / peer
        out.append(
            Check(case, f"{ratio:.2f}× ({_fmt(sluice)} vs {_fmt(peer)} jobs/s)", target, ratio >= factor)
        )
    return out


def case_batch_in_process(ctx: Context) -> list[Check]:
    case, target = "2a. batch enqueue in-process (1000/call)", "≥ 20,000 jobs/s"
    rate = ctx.rates.get(SLUICE_NAME, (None, None))[0]
    if rate is None:
        return [Check(case, f"n/a (row {SLUICE_NAME!r} not measured)", target)]
    out = [Check(case, f"{_fmt(rate)} jobs/s (the {SLUICE_NAME!r} row)", target, rate >= 20_000)]
    peer = ctx.rates.get(PGQUEUER_NAME, (None, None))[0]
    vs = "2a. batch enqueue in-process vs pgqueuer (asyncpg)"
    if peer is None:
        return [*out, Check(vs, f"n/a (row {PGQUEUER_NAME!r} not measured)", "≥ 1.0× pgqueuer")]
    ratio = rate / peer
    figure = f"{ratio:.2f}× ({_fmt(rate)} vs {_fmt(peer)} jobs/s)"
    return [*out, Check(vs, figure, "≥ 1.0× pgqueuer", ratio >= 1.0)]


# ------------------------------------------------------------------ 2b, 3: HTTP batch enqueue and drain


def _process_path(max_jobs: int, budget_ms: int, fan_out: int | None = None) -> str:
    path = f"/api/jobs/process?maxJobs={max_jobs}&budgetMs={budget_ms}"
    return path if fan_out is None else f"{path}&fanOut={fan_out}"


def case_http_enqueue_drain(ctx: Context) -> list[Check]:
    n, size = ctx.sizes.http_jobs, ctx.sizes.http_batch
    enq_case = f"2b. batch enqueue via HTTP ({size}/request, gunicorn -w 2)"
    drn_case = f"3. HTTP drain (maxJobs={ctx.sizes.drain_max_jobs}, gunicorn -w 2)"
    if ctx.api_missing():
        why = f"n/a (api.index: {ctx.api_missing()})"
        return [Check(enq_case, why), Check(drn_case, why, "≥ 10,000 jobs/s")]
    with fresh_database("http") as dsn:
        close_queue(_migrated_queue(dsn))
        with gunicorn(dsn, ["-w", "2", "--timeout", "300"]) as srv:
            client = srv.client()
            try:
                enq_s = _http_enqueue(client, n, size)
                analyze(dsn)  # untimed, as in the peers table
                drain_s, calls = _http_drain(client, ctx.sizes.drain_max_jobs, n)
            finally:
                client.close()
        counts = _counts(dsn)
    done = counts["completed"]
    drain_rate = _rate(done, drain_s)
    enq = Check(enq_case, f"{_fmt(_rate(n, enq_s))} jobs/s")
    note = f"{calls} calls of POST /api/jobs/process; {done} of {n} jobs completed"
    notes = [note if done == n else f"ERROR: {note}"]
    if ctx.sizes.quiet_compare:
        notes.append(
            f"the same drain with JOBS_LOG_LEVEL=WARNING (no per-job log lines; jobs enqueued in-process): "
            f"{_fmt(_quiet_http_drain(n, ctx.sizes.drain_max_jobs))} jobs/s"
        )
    drn = Check(
        drn_case,
        f"{_fmt(drain_rate)} jobs/s ({calls} calls)",
        "≥ 10,000 jobs/s",
        drain_rate >= 10_000 and done == n,
        tuple(notes),
    )
    return [enq, drn]


def _quiet_http_drain(n: int, max_jobs: int) -> float:
    """jobs/s of the HTTP drain when the app logs WARNING and up only (what the log lines cost)."""
    with fresh_database("http_quiet") as dsn:
        _backlog(dsn, n)
        env = server.app_env(dsn, JOBS_LOG_LEVEL="WARNING")
        with gunicorn(dsn, ["-w", "2", "--timeout", "300"], env=env) as srv:
            client = srv.client()
            try:
                drain_s, _ = _http_drain(client, max_jobs, n)
            finally:
                client.close()
        done = _counts(dsn)["completed"]
    if done != n:
        raise RuntimeError(f"quiet HTTP drain completed {done} of {n}")
    return _rate(n, drain_s)


def _http_enqueue(client: Client, n: int, size: int) -> float:
    t0 = perf_counter()
    for start in range(0, n, size):
        k = min(size, n - start)
        status, body = client.request("POST", "/api/jobs/batch", {"jobs": [{"type": "noop"}] * k})
        if status != 201 or len(body["jobs"]) != k:
            raise RuntimeError(f"POST /api/jobs/batch answered {status}: {str(body)[:300]}")
    return perf_counter() - t0


def _http_drain(client: Client, max_jobs: int, n: int) -> tuple[float, int]:
    """Call process until remaining == 0 (as a cron would, back to back); (seconds, calls)."""
    t0, calls = perf_counter(), 0
    while calls < n // max_jobs + 20:
        status, body = client.request("POST", _process_path(max_jobs, 60_000))
        calls += 1
        if status != 200:
            raise RuntimeError(f"POST /api/jobs/process answered {status}: {str(body)[:300]}")
        if body["remaining"] == 0:
            break
    return perf_counter() - t0, calls


# ------------------------------------------------------------------ 4: single-job enqueue latency


def case_latency(ctx: Context) -> list[Check]:
    threads, total = ctx.sizes.latency_threads, ctx.sizes.latency_requests
    case = f"4. POST /api/jobs latency, {threads} keep-alive clients (gunicorn -w 4 --threads 2)"
    target = "p50 < 5 ms, p99 < 20 ms"
    if ctx.api_missing():
        return [Check(case, f"n/a (api.index: {ctx.api_missing()})", target)]
    with fresh_database("latency") as dsn:
        close_queue(_migrated_queue(dsn))
        with gunicorn(dsn, ["-w", "4", "--threads", "2", "--timeout", "120"]) as srv:
            latencies, wall = _hammer(srv, threads, total)
        created = _counts(dsn)["total"]
        floor = sorted(_sql_latencies(dsn, threads, total))
    latencies.sort()
    p50, p99 = _quantile(latencies, 0.50), _quantile(latencies, 0.99)
    expected = total + threads * WARMUP_REQUESTS
    notes = [
        f"{len(latencies)} requests in {wall:.2f} s ({_fmt(_rate(len(latencies), wall))} req/s); "
        f"floor, the same one-row INSERT straight to PostgreSQL from {threads} threads: "
        f"p50 {_ms(_quantile(floor, 0.5))}, p99 {_ms(_quantile(floor, 0.99))}"
    ]
    if created != expected:
        notes.append(f"ERROR: {created} jobs in the table, expected {expected}")
    return [
        Check(
            case,
            f"p50 {_ms(p50)}, p99 {_ms(p99)}, max {_ms(latencies[-1])}",
            target,
            p50 < 0.005 and p99 < 0.020 and created == expected,
            tuple(notes),
        )
    ]


WARMUP_REQUESTS = 10  # per client, untimed: connections, each worker's first Queue, caches


def _hammer(srv: server.Server, threads: int, total: int) -> tuple[list[float], float]:
    """`threads` clients, each its own connection, all start together; latencies and wall time."""
    per = [total // threads + (1 if i < total % threads else 0) for i in range(threads)]
    results: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    start = threading.Barrier(threads + 1)

    def worker(index: int) -> None:
        client = srv.client(timeout=30)
        try:
            for _ in range(WARMUP_REQUESTS):
                client.request("POST", "/api/jobs", {"type": "noop"})
            start.wait()
            mine = results[index]
            for _ in range(per[index]):
                t0 = perf_counter()
                status, body = client.request("POST", "/api/jobs", {"type": "noop"})
                mine.append(perf_counter() - t0)
                if status != 201:
                    errors.append(f"{status}: {str(body)[:200]}")
                    return
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            start.abort()
        finally:
            client.close()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed; its error is raised below
        start.wait(timeout=120)
    t0 = perf_counter()
    for t in pool:
        t.join(timeout=300)
    wall = perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed; first: {errors[0]}")
    return [x for r in results for x in r], wall


_ONE_ROW_SQL = """
INSERT INTO sluice_jobs (id, type, payload, status, priority, attempts, max_attempts, timeout_seconds,
    backoff_strategy, backoff_delay, backoff_max, run_at, created_at, correlation_id)
VALUES (gen_random_uuid(), 'noop', '{}', 'pending', 0, 0, 3, 60, 'exponential', 10, 3600, now(), now(),
    gen_random_uuid()::text)
RETURNING id, run_at, created_at
"""


def _sql_latencies(dsn: str, threads: int, total: int) -> list[float]:
    """What the database alone needs per enqueue: one autocommit INSERT per call, same concurrency."""
    out: list[float] = []
    lock = threading.Lock()

    def worker(count: int) -> None:
        mine = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for _ in range(count):
                t0 = perf_counter()
                conn.execute(_ONE_ROW_SQL).fetchone()
                mine.append(perf_counter() - t0)
        with lock:
            out.extend(mine)

    pool = [threading.Thread(target=worker, args=(total // threads,)) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return out


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of an already sorted list."""
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


# ------------------------------------------------------------------ 5: a drain next to 1M finished rows

# Finished (or pending) jobs in one statement, columns as lib/schema.py's sluice_jobs. Ids are
# UUIDv7-shaped and older than any new job (one ms apart, from 2 days ago), as real history is.
BULK_ROWS_SQL = """
INSERT INTO sluice_jobs (id, type, payload, status, priority, attempts, max_attempts,
    timeout_seconds, backoff_strategy, backoff_delay, backoff_max, run_at, created_at,
    started_at, finished_at, result, correlation_id)
SELECT (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
    'noop', '{}'::jsonb,
    CASE WHEN %(done)s THEN 'completed' ELSE 'pending' END, 0,
    CASE WHEN %(done)s THEN 1 ELSE 0 END, 3, 60, 'exponential', 10, 3600, ts, ts,
    CASE WHEN %(done)s THEN ts + interval '1 ms' END,
    CASE WHEN %(done)s THEN ts + interval '2 ms' END,
    NULL, 'bench-' || i
FROM (SELECT i, lpad(to_hex(t0 + i), 12, '0') AS h, to_timestamp((t0 + i) / 1000.0) AS ts
      FROM generate_series(1, %(n)s) AS i,
           (SELECT (extract(epoch FROM now() - interval '2 days') * 1000)::bigint AS t0) AS base) AS g
"""


def bulk_rows(dsn: str, n: int, *, done: bool) -> float:
    """Insert n completed (done) or ready pending jobs, then VACUUM ANALYZE; seconds of the INSERT."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = perf_counter()
        conn.execute(BULK_ROWS_SQL, {"n": n, "done": done})
        seconds = perf_counter() - t0
        conn.execute("VACUUM ANALYZE sluice_jobs")
    return seconds


def _enqueue_drain(dsn: str, n: int) -> tuple[float, float]:
    """Enqueue then drain n noop jobs in-process on an already migrated database; (enq/s, drain/s)."""
    import lib

    q = lib.Queue.from_url(dsn)
    try:
        enq_s = enqueue_noops(q, n)
        analyze(dsn)  # untimed, as in the peers table
        drain_s, processed = drain_all(q, n)
    finally:
        close_queue(q)
    if processed != n:
        raise RuntimeError(f"drained {processed} of {n} jobs")
    return _rate(n, enq_s), _rate(n, drain_s)


def case_big_table(ctx: Context) -> list[Check]:
    rows, n = ctx.sizes.finished_rows, ctx.sizes.table_jobs
    case = f"5. drain with {rows:,} finished rows vs empty table ({n:,} jobs)"
    target = "drain within 1.3× of empty"
    with fresh_database("bigtable") as dsn:
        close_queue(_migrated_queue(dsn))
        empty_enq, empty_drn = _enqueue_drain(dsn, n)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("TRUNCATE sluice_jobs, sluice_drains")
        insert_s = bulk_rows(dsn, rows, done=True)
        full_enq, full_drn = _enqueue_drain(dsn, n)
        counts = _counts(dsn)
    slowdown = empty_drn / full_drn
    notes = [
        f"empty: enqueue {_fmt(empty_enq)}, drain {_fmt(empty_drn)} jobs/s; "
        f"{rows:,} finished rows: enqueue {_fmt(full_enq)}, drain {_fmt(full_drn)} jobs/s "
        f"(enqueue slowdown {empty_enq / full_enq:.2f}×); the {rows:,}-row INSERT … generate_series "
        f"took {insert_s:.1f} s (+ VACUUM ANALYZE)"
    ]
    ok = counts["completed"] == rows + n
    if not ok:
        notes.append(f"ERROR: {counts['completed']} completed, expected {rows + n}")
    return [Check(case, f"{slowdown:.2f}× slower", target, slowdown <= 1.3 and ok, tuple(notes))]


# ------------------------------------------------------------------ 6: peak RSS of a drain


def case_rss(ctx: Context) -> list[Check]:
    n = ctx.sizes.rss_jobs
    case, target = f"6. peak RSS of a {n:,}-job drain (child process)", "< 150 MB"
    with fresh_database("rss") as dsn:
        _backlog(dsn, n)
        proc = subprocess.run(
            [sys.executable, "-m", "bench.rss_child", dsn, str(n)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"child exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_mb, ready_mb = out["peak_kb"] / 1024, out["ready_kb"] / 1024
    ok = out["processed"] == n
    notes = [f"RSS {ready_mb:.0f} MB after `import lib` and Queue.from_url, before the drain"]
    if not ok:
        notes.append(f"ERROR: the child drained {out['processed']} of {n}")
    return [Check(case, f"{peak_mb:.0f} MB", target, peak_mb < 150 and ok, tuple(notes))]


# ------------------------------------------------------------------ 7: cold import time

_IMPORT_CODE = "import time;t=time.perf_counter();import {mod};print(time.perf_counter()-t)"


def _import_seconds(module: str, runs: int) -> list[float]:
    env = server.app_env(ADMIN_DSN)
    cmd = [sys.executable, "-c", _IMPORT_CODE.format(mod=module)]
    out: list[float] = []
    for i in range(runs + 1):  # the first run, untimed, writes any missing .pyc files
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True)
        if i:
            out.append(float(proc.stdout.strip().splitlines()[-1]))
    return out


def _importtime_top(module: str, top: int = 10) -> list[str]:
    """The `top` biggest cumulative entries of `python -X importtime -c "import <module>"`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO,
        env=server.app_env(ADMIN_DSN),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    entries: list[tuple[int, str]] = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            entries.append((int(parts[1]), parts[2].strip()))
    entries.sort(reverse=True)
    return [f"{us / 1000:.0f} ms {name}" for us, name in entries[:top]]


def case_import(ctx: Context) -> list[Check]:
    runs = ctx.sizes.import_runs
    out: list[Check] = []
    for module, target in (("api.index", "< 300 ms"), ("lib", "report")):
        case = f"7. cold `import {module}` (median of {runs} processes)"
        if module == "api.index" and ctx.api_missing():
            out.append(Check(case, f"n/a (api.index: {ctx.api_missing()})", target))
            continue
        times = _import_seconds(module, runs)
        median = statistics.median(times)
        spread = f"runs: {', '.join(f'{t * 1000:.0f}' for t in times)} ms"
        if target == "report":
            out.append(Check(case, _ms(median), target, None, (spread,)))
            continue
        met = median < 0.300
        notes = [spread]
        if not met:
            notes.append("top cumulative `-X importtime`: " + "; ".join(_importtime_top(module)))
        out.append(Check(case, _ms(median), target, met, tuple(notes)))
    return out


# ------------------------------------------------------------------ 8: SQLite


def case_sqlite(ctx: Context) -> list[Check]:
    n = ctx.sizes.sqlite_jobs
    case = f"8. SQLite file: {n:,} noop jobs in-process"
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        q = _migrated_queue(f"sqlite:///{path}")
        try:
            enq_s = enqueue_noops(q, n)
            drain_s, _ = drain_all(q, n)
        finally:
            close_queue(q)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            done = conn.execute("SELECT count(*) FROM sluice_jobs WHERE status = 'completed'").fetchone()[0]
    notes = () if done == n else (f"ERROR: {done} of {n} completed",)
    figure = f"enqueue {_fmt(_rate(n, enq_s))} jobs/s, drain {_fmt(_rate(n, drain_s))} jobs/s"
    return [Check(case, figure, "report", None, notes)]


# ------------------------------------------------------------------ 9: fanOut within one tick


def _openapi_has_fanout(client: Client) -> bool:
    status, doc = client.request("GET", "/api/openapi.json")
    return status == 200 and '"fanOut"' in json.dumps(doc)


def _settle(dsn: str, timeout: float) -> dict[str, int]:
    """Wait until fanned-out calls are done: nothing processing and counts unchanged for 1 s."""
    deadline = time.monotonic() + timeout
    last, stable_since = _counts(dsn), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = _counts(dsn)
        if now != last or now["processing"]:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 1.0:
            break
    return last


def case_fanout(ctx: Context) -> list[Check]:
    s = ctx.sizes
    setup = f"{s.fanout_backlog:,} backlog, maxJobs={s.drain_max_jobs}, budgetMs={s.fanout_budget_ms}"
    names = [f"9. one tick, fanOut={f} ({setup}; gunicorn -w 8 --threads 4)" for f in s.fanouts]
    target = "report jobs cleared; exactly once"
    if ctx.api_missing():
        return [Check(name, f"n/a (api.index: {ctx.api_missing()})", target) for name in names]
    out: list[Check] = []
    with fresh_database("fanout") as dsn:
        close_queue(_migrated_queue(dsn))
        with gunicorn(dsn, ["-w", "8", "--threads", "4", "--timeout", "120"]) as srv:
            client = srv.client()
            try:
                documented = _openapi_has_fanout(client)
                available = True
                for name, fan_out in zip(names, s.fanouts, strict=True):
                    if not available:
                        out.append(Check(name, "n/a (fanOut not available)", target))
                        continue
                    check, available = _one_tick(client, dsn, name, fan_out, s, documented)
                    out.append(check)
            finally:
                client.close()
    return out


def _one_tick(
    client: Client, dsn: str, name: str, fan_out: int, s: Sizes, documented: bool
) -> tuple[Check, bool]:
    """One process call on a fresh backlog; (its row, whether fanOut looked available)."""
    target = "report jobs cleared; exactly once"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE sluice_jobs, sluice_drains")
    bulk_rows(dsn, s.fanout_backlog, done=False)
    t0 = perf_counter()
    status, body = client.request("POST", _process_path(s.drain_max_jobs, s.fanout_budget_ms, fan_out))
    call_s = perf_counter() - t0
    if status == 422:
        return Check(name, "n/a (fanOut not available)", target, None, (f"422: {str(body)[:200]}",)), False
    if status != 200:
        raise RuntimeError(f"POST /api/jobs/process answered {status}: {str(body)[:300]}")
    counts = _settle(dsn, s.fanout_budget_ms / 1000 + 60)
    cleared = counts["completed"]
    if fan_out > 1 and not documented and cleared <= s.drain_max_jobs:
        note = f"fanOut ignored: cleared {cleared} ≤ maxJobs and not in /api/openapi.json"
        return Check(name, "n/a (fanOut not available)", target, None, (note,)), False
    lost = s.fanout_backlog - counts["total"]
    once = counts["repeated"] == 0 and lost == 0 and counts["failed"] == 0 and counts["processing"] == 0
    notes = [
        f"call returned in {call_s:.2f} s with processed={body.get('processed')}, "
        f"remaining={body.get('remaining')}, stoppedBy={body.get('stoppedBy')}; "
        f"{counts['drains']} drain rows recorded, succeeded sum {counts['succeeded']}; "
        f"{counts['pending']} pending left"
    ]
    if not once:
        notes.append(
            f"ERROR: exactly-once violated: {counts['repeated']} completed with attempts≠1, "
            f"{lost} lost, {counts['failed']} failed, {counts['processing']} still processing"
        )
    rate = _fmt(_rate(cleared, call_s))
    figure = f"{cleared:,} jobs cleared ({rate} jobs/s), exactly once: {'yes' if once else 'NO'}"
    return Check(name, figure, target, once, tuple(notes)), True


# ------------------------------------------------------------------ 10, 11: enqueue → start, no cron


def case_kick(ctx: Context) -> list[Check]:
    n = ctx.sizes.wake_enqueues
    case = f"10. enqueue→start, kick on enqueue (gunicorn -w 2, {n} single enqueues, no cron)"
    target = "p50 < 1 s, p99 < 3 s"
    if ctx.api_missing():
        return [Check(case, f"n/a (api.index: {ctx.api_missing()})", target)]
    with fresh_database("kick") as dsn:
        close_queue(_migrated_queue(dsn))
        latencies, kicks = wakeup.kick_latency(dsn, n)
    p50, p99 = wakeup.quantiles(latencies)
    spacing = f"{wakeup.SPACING_S * 1000:.0f} ms apart"
    note = f"{kicks} kick drains for {n} enqueues ({spacing}); slowest start {_ms(max(latencies))}"
    return [Check(case, f"p50 {_ms(p50)}, p99 {_ms(p99)}", target, p50 < 1.0 and p99 < 3.0, (note,))]


def case_notify(ctx: Context) -> list[Check]:
    n = ctx.sizes.wake_enqueues
    case = f"11. enqueue→start, `drain --loop` woken by NOTIFY ({n} single enqueues, poll 60 s)"
    with fresh_database("notify") as dsn:
        close_queue(_migrated_queue(dsn))
        latencies = wakeup.notify_latency(dsn, n)
    p50, p99 = wakeup.quantiles(latencies)
    return [Check(case, f"p50 {_ms(p50)}, p99 {_ms(p99)}", "p50 < 50 ms", p50 < 0.050)]


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class SluiceCase:
    keys: frozenset[str]  # the case numbers it measures (what --sluice-cases selects)
    title: str  # shown on an error row
    run: Callable[[Context], list[Check]]
    needs_api: bool = False


def _case(
    keys: str, title: str, run: Callable[[Context], list[Check]], needs_api: bool = False
) -> SluiceCase:
    return SluiceCase(frozenset(keys.split(",")), title, run, needs_api)


CASES: list[SluiceCase] = [
    _case("1", "1. in-process drain vs raw SQL and pgqueuer", case_drain_ratios),
    _case("2", "2a. batch enqueue in-process", case_batch_in_process),
    _case("2,3", "2b/3. HTTP batch enqueue and drain", case_http_enqueue_drain, needs_api=True),
    _case("4", "4. POST /api/jobs latency", case_latency, needs_api=True),
    _case("5", "5. drain next to finished rows", case_big_table),
    _case("6", "6. peak RSS of a drain", case_rss),
    _case("7", "7. cold import", case_import, needs_api=True),
    _case("8", "8. SQLite", case_sqlite),
    _case("9", "9. fanOut within one tick", case_fanout, needs_api=True),
    _case("10", "10. enqueue→start with kick on enqueue", case_kick, needs_api=True),
    _case("11", "11. enqueue→start with a NOTIFY worker", case_notify),
]


def run_all(ctx: Context, keys: set[str]) -> list[Check]:
    """Run the selected cases in order; a case that raises becomes one error row, the rest go on."""
    chosen = [c for c in CASES if not keys or c.keys & keys]
    if any(c.needs_api for c in chosen):
        ctx.api_problem = server.api_importable()
    checks: list[Check] = []
    for case in chosen:
        print(f"… {case.title}", file=sys.stderr, flush=True)
        t0 = perf_counter()
        try:
            checks += case.run(ctx)
        except Exception as exc:
            traceback.print_exc()
            checks.append(Check(case.title, f"error: {type(exc).__name__}: {str(exc)[:300]}", "", False))
        print(f"  ({perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
    return checks


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(checks: Sequence[Check]) -> str:
    lines = ["| case | figure | target | met? |", "|---|---|---|:---:|"]
    notes: list[str] = []
    for c in checks:
        met = "–" if c.met is None else ("yes" if c.met else "**no**")
        lines.append(f"| {_cell(c.case)} | {_cell(c.figure)} | {_cell(c.target)} | {met} |")
        label = c.case.split(" (", 1)[0]
        notes += [f"- {label}: {n}" for n in c.notes]
    return "\n".join([*lines, "", *notes] if notes else lines)


def any_error(checks: Sequence[Check]) -> bool:
    return any(c.figure.startswith("error") or any(n.startswith("ERROR") for n in c.notes) for c in checks)


__all__ = ["CASES", "Check", "Context", "Sizes", "any_error", "render", "run_all"]
