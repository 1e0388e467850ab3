"""Exit codes and how the CLI writes: results as JSON on stdout, messages and progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


def emit(value: Any, *, compact: bool = False) -> None:
    """One result on stdout: indented for a reader, or one line per value (--loop's JSON lines)."""
    indent = None if compact else 2
    separators = (",", ":") if compact else None
    print(json.dumps(value, indent=indent, separators=separators, default=str), flush=True)


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def error(message: str, details: Any = None) -> None:
    info(f"error: {message}")
    if isinstance(details, list):
        for item in details:
            if isinstance(item, dict) and "loc" in item:
                info(f"  {item['loc']}: {item.get('msg', '')}")
            else:
                info(f"  {item}")
    elif details:
        info(f"  {json.dumps(details, default=str)}")


class Progress:
    """Drain progress on stderr: one carriage-return line on a terminal, plain lines otherwise."""

    WIDTH = 30

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self.drawn = False

    def update(self, done: int, failed: int = 0) -> None:
        elapsed = time.monotonic() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{done}/{self.total} jobs, {failed} failed, {elapsed:.1f} s, {rate:.0f} jobs/s"
        if self.tty:
            filled = min(self.WIDTH, round(self.WIDTH * done / self.total))
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\r[{bar}] {text}\x1b[K")
        else:
            self.stream.write(f"drain: {text}\n")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
