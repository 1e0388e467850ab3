"""python -m bench.run [--jobs 20000] [--out bench/results.md] [--only NAME,...]

Runs every case on its own fresh PostgreSQL database, prints a markdown table and writes it to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import platform
import sys
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench import peers, pgutil, sluice_cases
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
    args = ap.parse_args(argv)
    pgutil.ANALYZE_BEFORE_DRAIN = not args.no_analyze

    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    cases = [c for c in ALL_CASES if not wanted or c.name in wanted]
    rows = [run_case(c, args.jobs) for c in cases]

    header = (
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} on {server_version()}, "
        f"N = {args.jobs} no-op jobs per system, fresh database each; {_versions()}. "
        "Ratio = system / Sluice (>1: faster than Sluice).\n\n"
        f"Settings: enqueue in batches of {peers.BATCH} (seeds: one INSERT per job); "
        f"{'untimed ANALYZE between enqueue and drain' if pgutil.ANALYZE_BEFORE_DRAIN else 'no ANALYZE'}; "
        f"raw SQL claims 500 per statement; procrastinate worker concurrency "
        f"{peers.PROCRASTINATE_CONCURRENCY}; pgqueuer batch_size {peers.PGQUEUER_BATCH}, drain mode."
    )
    text = f"{header}\n\n{render(rows, args.jobs)}\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    return 1 if any(r.problem.startswith("error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
