"""python -m bench.run [--jobs 20000] [--out bench/results.md] [--only NAME,...] [--sluice-cases 1,2,...]

Runs every peer case on its own fresh PostgreSQL database and prints a markdown table; then issue 7's
Sluice-only cases (bench/sluice_only.py) and their "Sluice cases" table; writes both to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import sys
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench import peers, pgutil, sluice_cases, sluice_only
from bench.cases import Case, NotAvailable, Timing
from bench.pgutil import fresh_database, server_version

ALL_CASES: list[Case] = sluice_cases.CASES + peers.CASES


@dataclass
class Row:
    name: str
    timing: Timing | None = None
    problem: str = ""  # "not available: …" or "error: …"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")[:30]


def run_case(case: Case, n: int) -> Row:
    reason = case.available()
    if reason:
        return Row(case.name, problem=f"not available: {reason}")
    print(f"… {case.name}", file=sys.stderr, flush=True)
    try:
        with fresh_database(_slug(case.name)) as dsn:
            timing = case.run(dsn, n)
    except NotAvailable as exc:
        return Row(case.name, problem=f"not available: {exc}")
    except Exception as exc:
        traceback.print_exc()
        return Row(case.name, problem=f"error: {type(exc).__name__}: {exc}")
    if case.check_done and timing.done != n:
        print(
            f"ERROR: {case.name}: {timing.done} jobs completed in the database, expected {n}", file=sys.stderr
        )
        return Row(case.name, timing, problem=f"error: {timing.done} completed, expected {n}")
    return Row(case.name, timing)


def _rate(n: int, seconds: float | None) -> float | None:
    return n / seconds if seconds else None


def _fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r is not None else "–"


def _fmt_ratio(peer: float | None, ref: float | None) -> str:
    return f"{peer / ref:.2f}" if peer is not None and ref else "n/a"


def render(rows: list[Row], n: int) -> str:
    ref = next((r for r in rows if r.name == sluice_cases.SLUICE_NAME and r.timing and not r.problem), None)
    ref_enq = _rate(n, ref.timing.enqueue_s) if ref and ref.timing else None
    ref_drn = _rate(n, ref.timing.drain_s) if ref and ref.timing else None
    lines = [
        "| system | enqueue jobs/s | drain jobs/s | enqueue ×Sluice | drain ×Sluice |",
        "|---|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for r in rows:
        if r.timing is None:
            lines.append(f"| {r.name} | {r.problem} | – | n/a | n/a |")
            continue
        enq, drn = _rate(n, r.timing.enqueue_s), _rate(n, r.timing.drain_s)
        lines.append(
            f"| {r.name} | {_fmt_rate(enq)} | {_fmt_rate(drn)} "
            f"| {_fmt_ratio(enq, ref_enq)} | {_fmt_ratio(drn, ref_drn)} |"
        )
        notes += [f"- {r.name}: {x}" for x in (r.problem, r.timing.note) if x]
    return "\n".join([*lines, "", *notes] if notes else lines)


def _versions() -> str:
    out = [f"Python {platform.python_version()}"]
    for pkg in ("procrastinate", "pgqueuer", "psycopg"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{pkg} {metadata.version(pkg)}")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs per case (default 20000)")
    ap.add_argument("--out", type=Path, default=Path("bench/results.md"))
    ap.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    ap.add_argument("--no-analyze", action="store_true", help="skip the untimed ANALYZE before each drain")
    _sluice_args(ap)
    args = ap.parse_args(argv)
    pgutil.ANALYZE_BEFORE_DRAIN = not args.no_analyze

    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    cases = [c for c in ALL_CASES if not wanted or c.name in wanted]
    load_start = _load()
    rows = [run_case(c, args.jobs) for c in cases]

    header = (
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} on {server_version()}, "
        f"N = {args.jobs} no-op jobs per system, fresh database each; {_versions()}. "
        "Ratio = system / Sluice (>1: faster than Sluice).\n\n"
        f"Settings: enqueue in batches of {peers.BATCH} (seeds: one INSERT per job); "
        f"{'untimed ANALYZE between enqueue and drain' if pgutil.ANALYZE_BEFORE_DRAIN else 'no ANALYZE'}; "
        f"raw SQL claims 500 per statement; procrastinate worker concurrency "
        f"{peers.PROCRASTINATE_CONCURRENCY}; pgqueuer batch_size {peers.PGQUEUER_BATCH}, drain mode. "
        f"Load average (1 min) before {load_start}, after {_load()} ({os.cpu_count()} cores)."
    )
    text = f"{header}\n\n{render(rows, args.jobs)}\n"
    print(text, flush=True)

    checks: list[sluice_only.Check] = []
    if args.sluice_cases != "none":
        keys = {k.strip() for k in args.sluice_cases.split(",") if k.strip() and k.strip() != "all"}
        ctx = sluice_only.Context(_sizes(args), _rates(rows, args.jobs))
        load_before = _load()
        checks = sluice_only.run_all(ctx, keys)
        load = f"Load average (1 min) before these cases {load_before}, after {_load()}."
        second = f"### Sluice cases\n\n{SLUICE_HEADER} {load}\n\n{sluice_only.render(checks)}\n"
        print(second)
        text = f"{text}\n{second}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    failed = any(r.problem.startswith("error") for r in rows) or sluice_only.any_error(checks)
    return 1 if failed else 0


SLUICE_HEADER = (
    "Issue 7's targets, measured in the same run on this machine. Cases 1 and 2a are computed from the "
    "table above; HTTP cases run `gunicorn api.index:app` (JOBS_LOG_LEVEL default, INFO) on a fresh "
    "database over loopback; in-process cases use `lib.Queue`. met? is blank for report-only figures."
)


def _load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.1f}"


def _sluice_args(ap: argparse.ArgumentParser) -> None:
    d = sluice_only.Sizes()
    g = ap.add_argument_group("Sluice cases (issue 7)")
    g.add_argument("--sluice-cases", default="all", help="case numbers 1-9, comma-separated, or all|none")
    g.add_argument("--http-jobs", type=int, default=d.http_jobs, help="cases 2b and 3")
    g.add_argument("--drain-max-jobs", type=int, default=d.drain_max_jobs, help="maxJobs of cases 3 and 9")
    g.add_argument("--latency-requests", type=int, default=d.latency_requests, help="case 4")
    g.add_argument("--latency-threads", type=int, default=d.latency_threads, help="case 4")
    g.add_argument("--finished-rows", type=int, default=d.finished_rows, help="case 5")
    g.add_argument("--table-jobs", type=int, default=d.table_jobs, help="case 5: jobs drained per table")
    g.add_argument("--rss-jobs", type=int, default=d.rss_jobs, help="case 6")
    g.add_argument("--import-runs", type=int, default=d.import_runs, help="case 7")
    g.add_argument("--sqlite-jobs", type=int, default=d.sqlite_jobs, help="case 8")
    g.add_argument("--fanout-backlog", type=int, default=d.fanout_backlog, help="case 9")
    g.add_argument("--fanouts", default=",".join(map(str, d.fanouts)), help="case 9: fanOut values")
    g.add_argument("--fanout-budget-ms", type=int, default=d.fanout_budget_ms, help="case 9: budgetMs")
    g.add_argument(
        "--no-log-compare", action="store_true", help="case 3: skip the extra drain at JOBS_LOG_LEVEL=WARNING"
    )


def _sizes(args: argparse.Namespace) -> sluice_only.Sizes:
    return sluice_only.Sizes(
        http_jobs=args.http_jobs,
        drain_max_jobs=args.drain_max_jobs,
        latency_requests=args.latency_requests,
        latency_threads=args.latency_threads,
        finished_rows=args.finished_rows,
        table_jobs=args.table_jobs,
        rss_jobs=args.rss_jobs,
        import_runs=args.import_runs,
        sqlite_jobs=args.sqlite_jobs,
        fanout_backlog=args.fanout_backlog,
        fanouts=tuple(int(x) for x in args.fanouts.split(",") if x.strip()),
        fanout_budget_ms=args.fanout_budget_ms,
        quiet_compare=not args.no_log_compare,
    )


def _rates(rows: list[Row], n: int) -> dict[str, tuple[float | None, float | None]]:
    """jobs/s (enqueue, drain) of each row that ran cleanly, for cases 1 and 2a."""
    return {
        r.name: (_rate(n, r.timing.enqueue_s), _rate(n, r.timing.drain_s))
        for r in rows
        if r.timing is not None and not r.problem
    }


if __name__ == "__main__":
    sys.exit(main())
