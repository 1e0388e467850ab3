"""python -m bench.rss_child DSN N: drain N jobs in this fresh process, print its peak RSS as JSON.

Run by case 6 of bench/sluice_only.py so the figure is a drain's footprint alone, not the bench's.
"""

from __future__ import annotations

import json
import resource
import sys


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def main(argv: list[str]) -> int:
    dsn, n = argv[0], int(argv[1])
    import lib

    q = lib.Queue.from_url(dsn)
    ready_kb = _peak_kb()
    processed = 0
    try:
        while processed < n:
            summary = q.drain(max_jobs=n - processed, budget_ms=600_000)
            if summary.processed == 0:
                break
            processed += summary.processed
    finally:
        q.engine.dispose()
    print(json.dumps({"ready_kb": ready_kb, "peak_kb": _peak_kb(), "processed": processed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
