"""python -m bench.flow_drain [--jobs 20000] [--rounds 3] [--tenants 1] --before PATH

Drain throughput of plain jobs (no concurrency key; one tenant unless --tenants) of this checkout
against another checkout of Sluice (``--before``: e.g. a `git worktree` of main), in one run: the
two alternate, each round on fresh databases (PostgreSQL and SQLite), so both see the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.pgutil import fresh_database

# Runs inside the checkout being measured (its own `lib`), prints {"drain_s": …, "done": …}.
CHILD = """
import json, sys, time
import lib
url, n, tenants = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
q = lib.Queue.from_url(url)
q.migrate()
for start in range(0, n, 1000):
    q.enqueue_many([
        lib.JobSpec(type="noop", tenant_id=None if tenants == 1 else f"t{i % tenants}")
        for i in range(min(1000, n - start))
    ])
t0 = time.perf_counter()
done = 0
while done < n:
    summary = q.drain(max_jobs=n - done, budget_ms=600_000)
    if summary.processed == 0:
        break
    done += summary.processed
print(json.dumps({"drain_s": time.perf_counter() - t0, "done": done}))
q.engine.dispose()
"""


def measure(tree: Path, url: str, n: int, tenants: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree), "JOBS_LOG_LEVEL": "WARNING"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(n), str(tenants)],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"] == n, result
    return n / result["drain_s"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=1, help="jobs spread over this many tenants")
    parser.add_argument("--before", type=Path, required=True)
    args = parser.parse_args()
    after = Path(__file__).resolve().parent.parent
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for label, tree in (("before", args.before.resolve()), ("after", after)):
            with fresh_database("flow_drain") as dsn:
                rates.setdefault(("postgresql", label), []).append(
                    measure(tree, dsn, args.jobs, args.tenants)
                )
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/bench.db"
                rates.setdefault(("sqlite", label), []).append(measure(tree, url, args.jobs, args.tenants))
    print(f"| database | before (jobs/s, median of {args.rounds}) | after | change |")
    print("|---|---|---|---|")
    for db in ("postgresql", "sqlite"):
        before, now = statistics.median(rates[(db, "before")]), statistics.median(rates[(db, "after")])
        print(f"| {db} | {before:,.0f} | {now:,.0f} | {100 * (now / before - 1):+.1f} % |")


if __name__ == "__main__":
    main()
