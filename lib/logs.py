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


# What libraries Sluice drives log at DEBUG with values in it: SQLAlchemy's result rows (payloads,
# results, idempotency keys; bound parameters are hidden by the engine), botocore's request
# parameters and response bodies (an SES message's subject and text, an archive's rows) and the
# request it signs. Their arguments are replaced, the line itself kept: a host that turns these
# loggers to DEBUG still sees what happened, never the values.
HIDDEN_ARGS: dict[str, frozenset[str]] = {
    "sqlalchemy.engine.Engine": frozenset({"Row %r"}),
    "botocore.endpoint": frozenset({"Making request for %s with params: %s"}),
    "botocore.parsers": frozenset({"Response body:\n%r", "Response headers: %r"}),
    "botocore.awsrequest": frozenset({"Rewinding stream: %s"}),
    "botocore.auth": frozenset({"CanonicalRequest:\n%s", "StringToSign:\n%s", "String to sign: %s"}),
}
HIDDEN = "<hidden by Sluice>"


class HideValues(logging.Filter):
    """Replace the arguments of the messages listed for this logger (see HIDDEN_ARGS)."""

    def __init__(self, templates: frozenset[str]) -> None:
        super().__init__()
        self.templates = templates

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.templates and record.args:
            count = len(record.args) if isinstance(record.args, tuple) else 1
            record.args = (HIDDEN,) * count
        return True


def guard_library_loggers() -> None:
    """Install HideValues on the libraries' loggers (idempotent; the loggers need not exist yet:
    botocore, imported lazily, picks up the same logger objects)."""
    for name, templates in HIDDEN_ARGS.items():
        target = logging.getLogger(name)
        if not any(isinstance(f, HideValues) for f in target.filters):
            target.addFilter(HideValues(templates))


guard_library_loggers()


def configure(level: str = "INFO") -> None:
    """Send Sluice's lines to stderr once (CLI and app start); libraries embedding us skip this."""
    if not any(getattr(h, "_sluice", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._sluice = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)
