"""Per-app state: the settings, and a Queue built on first use (a cold start opens no connection)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app

from lib import Queue
from lib.config import Settings
from lib.errors import ConfigError

if TYPE_CHECKING:
    from ._openapi import ApiDoc

EXTENSION = "sluice"


class SluiceState:
    """What the routes share. ``queue`` is built lazily, once, even under concurrent first requests."""

    def __init__(self, settings: Settings, queue: Queue | None = None, problem: str | None = None) -> None:
        self.settings = settings
        self._queue = queue
        # Configuration that cannot work (an unparsable setting, a handler module that does not
        # import): health says "misconfigured" and protected routes 503 with this text.
        self._problem = problem
        self._lock = threading.Lock()
        # Each route module adds a function that describes its operations (see api/_openapi.py).
        self.documenters: list[Callable[[ApiDoc], None]] = []
        self.openapi: dict[str, Any] | None = None

    @property
    def queue(self) -> Queue:
        queue = self._queue
        if queue is None:
            with self._lock:
                if self._problem is not None:
                    raise ConfigError(self._problem)
                if self._queue is None:
                    try:
                        self._queue = Queue.from_settings(self.settings)
                    except ConfigError as exc:
                        self._problem = exc.message
                        raise
                queue = self._queue
        return queue

    @property
    def problem(self) -> str | None:
        """What makes this deployment unable to work, found on first use (building the queue
        imports the handler modules); None when all is well."""
        if self._queue is None and self._problem is None:
            with contextlib.suppress(ConfigError):
                _ = self.queue
        return self._problem

    def dispose(self) -> None:
        """Close the pooled connections (tests, and processes that outlive the app)."""
        if self._queue is not None:
            self._queue.engine.dispose()


def app_state(app: Flask | None = None) -> SluiceState:
    state: SluiceState = (app or current_app).extensions[EXTENSION]
    return state


def current_queue() -> Queue:
    return app_state().queue


def current_settings() -> Settings:
    return app_state().settings
