"""A cold start loads only what any request may need: `import api.index` in a fresh process
leaves the modules below unloaded (each is imported where it is used; see ALLOWED_LAZY)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Loaded on first use only: by a drain, a schedule or maintenance route, a scrape, a key
# rotation, a fan-out or a SQLite database.
NOT_AT_IMPORT = (
    "lib.drain",
    "lib.store.claim",
    "lib.attempts",
    "lib.schedules",
    "lib.retention",
    "lib.metrics",
    "lib.rotation",
    "lib.alerts",
    "sqlite3",
    "urllib.request",
    "alembic",
    "boto3",
    "cryptography",
    "croniter",
    "prometheus_client",
)


def test_importing_the_app_loads_no_feature_a_request_may_not_need() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBS_", "DATABASE_URL", "CRON_"))}
    env.update(DATABASE_URL="postgresql://user@127.0.0.1:1/never_connected", JOBS_API_KEYS="k" * 32)
    code = "import json, sys; import api.index; print(json.dumps(sorted(sys.modules)))"
    command = [sys.executable, "-c", code]
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "api.index" in loaded and "lib.queue" in loaded
    assert sorted(name for name in NOT_AT_IMPORT if name in loaded) == []
