"""What a long-running worker (``python -m lib drain --loop``) does between drains.

On PostgreSQL it waits for the NOTIFY an enqueue sends (lib/store/notify.py) on a connection of its
own, so a ready job starts within milliseconds; it still polls every ``interval`` seconds (a job
whose delay ran out sends no notification, and a lost connection may miss some), and reconnects
when that connection is lost. On SQLite it polls.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from .store import notify

# Longest single wait: how soon a stop request (SIGTERM) is seen while idle.
SLICE_SECONDS = 0.25
# A worker's LISTEN connection gives up connecting after this long (then polls, and tries again).
CONNECT_TIMEOUT_SECONDS = 5


class Waker:
    """``wait()`` returns when a drain is worth running: a notification, the poll interval, a
    reconnection (notifications may have been missed), or ``stop`` being set."""

    def __init__(
        self, engine: sa.Engine, interval: float, stop: threading.Event, say: Callable[[str], None]
    ) -> None:
        self.engine, self.interval, self.stop, self.say = engine, interval, stop, say
        self.listens = engine.dialect.name == "postgresql"
        self.conn: Any = None
        self.reconnects = 0

    def start(self) -> None:
        """Listen before the first drain, so nothing enqueued after that drain's look goes unseen."""
        if self.listens and self._connect():
            self.say(f"listening for enqueues (NOTIFY {notify.CHANNEL}); polling every {self.interval:g} s")
        elif not self.listens:
            self.say(f"polling every {self.interval:g} s (SQLite has no NOTIFY)")

    def wait(self) -> str:
        """Why it returned: "notify", "poll", "reconnect" or "stop"."""
        deadline = time.monotonic() + self.interval
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return "poll"
            if not self.listens:
                self.stop.wait(min(left, SLICE_SECONDS))
                continue
            if self.conn is None:
                if self._connect():
                    self.reconnects += 1
                    self.say("listening again after a lost connection")
                    return "reconnect"
                self.stop.wait(left)
                continue
            if self._wait_notify(min(left, SLICE_SECONDS)):
                return "notify"
        return "stop"

    def close(self) -> None:
        if self.conn is not None:
            conn, self.conn = self.conn, None
            # Closing a broken connection may fail too; there is nothing left to do with it.
            with contextlib.suppress(Exception):
                conn.close()

    def _wait_notify(self, timeout: float) -> bool:
        import psycopg  # lazy: only PostgreSQL workers get here (see _connect)

        try:
            return notify.wait(self.conn, timeout)
        except psycopg.Error as exc:
            self.say(f"lost the LISTEN connection ({type(exc).__name__}); reconnecting, polling meanwhile")
            self.close()
            return False

    def _connect(self) -> bool:
        import psycopg  # lazy: a SQLite-only worker never loads the PostgreSQL driver

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        cparams = {**cparams, "connect_timeout": CONNECT_TIMEOUT_SECONDS, "autocommit": True}
        cparams.setdefault("application_name", "sluice-worker")
        try:
            self.conn = psycopg.connect(*cargs, **cparams)
            notify.listen(self.conn)
        except psycopg.Error as exc:
            self.close()
            self.say(f"cannot listen for enqueues ({type(exc).__name__}); polling every {self.interval:g} s")
            return False
        return True
