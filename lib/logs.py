"""Structured log lines: one JSON object per event, never payloads or secrets."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

logger = logging.getLogger("sluice")


def log_event(event: str, **fields: Any) -> None:
    """An INFO line. Checked first, so a drain of 20k jobs pays nothing when INFO is off."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(event_line(event, **fields))


def event_line(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields}, default=str, separators=(",", ":"))


def log_lines(lines: list[str]) -> None:
    """Many event lines in one logging call: still one JSON object per line of output."""
    if lines and logger.isEnabledFor(logging.INFO):
        logger.info("\n".join(lines))


def configure(level: str = "INFO") -> None:
    """Send Sluice's lines to stderr once (CLI and app start); libraries embedding us skip this."""
    if not any(getattr(h, "_sluice", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._sluice = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
