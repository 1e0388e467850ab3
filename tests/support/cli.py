"""The command line in tests: ``main`` run in this process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lib.cli import main
from lib.config import get_settings


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """main(argv) in this process → (exit code, stdout parsed as JSON or None, stderr)."""
    get_settings.cache_clear()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err
