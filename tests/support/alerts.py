"""Dead-letter alerts in tests: settings from the environment, failing jobs, the digests made."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from lib import JobSpec, Queue
from lib.alerts import ALERT_TYPE
from lib.config import get_settings


def set_env(env: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        env.setenv(name.upper(), value)
    get_settings.cache_clear()


def fail_jobs(queue: Queue, n: int, type: str = "test.fail") -> None:
    queue.enqueue_many([JobSpec(type=type, max_attempts=1) for _ in range(n)])


def alert_payloads(queue: Queue) -> list[dict[str, Any]]:
    with queue.engine.connect() as conn:
        ids = conn.execute(sa.text(f"SELECT id FROM sluice_jobs WHERE type = '{ALERT_TYPE}'")).scalars().all()
    return [queue.get(str(i)).payload for i in ids]
