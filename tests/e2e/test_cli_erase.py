"""``python -m lib erase TENANT``: the CLI erases a tenant, ids the API refuses included (rows
made before tenant ids were restricted can still go)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.support.cli import run
from tests.support.db import count, make_queue


def test_erase_a_tenant_from_the_command_line(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    queue = make_queue(env)
    try:
        for tenant in ("acme", "acme", "other"):
            queue.enqueue("noop", tenant_id=tenant)
        queue.enqueue("noop")  # made keyless, given an id the API now refuses below
        with queue.engine.begin() as conn:
            conn.execute(sa.text("UPDATE sluice_jobs SET tenant_id = 'a/b' WHERE tenant_id IS NULL"))
        code, out, _ = run(capsys, "erase", "acme")
        assert (code, out) == (0, {"deleted": 2, "schedules": 0, "processing": 0})
        code, out, _ = run(capsys, "erase", "a/b")
        assert (code, out) == (0, {"deleted": 1, "schedules": 0, "processing": 0})
        assert count(queue) == 1 and count(queue, "tenant_id = 'other'") == 1
        code, out, err = run(capsys, "erase", "")
        assert code == 2 and out is None and "tenant" in err
    finally:
        queue.engine.dispose()
