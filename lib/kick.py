"""Kick on enqueue: an enqueue that makes a job ready starts a drain of its own deployment
(``POST <own url>/api/jobs/process``, source ``kick``) instead of leaving it to the next cron tick.

A kick never delays the enqueue and never loses anything: the request is sent from a thread and
its answer is not awaited by the enqueue; a kick that fails or is refused leaves the jobs pending
for cron. Per process, at most one kick starts per ``JOBS_KICK_MIN_INTERVAL_MS`` and only while
none is in flight; enqueues in between are not dropped but owe one trailing kick, sent when the
interval is over and the kick in flight has answered (a drain already running may have missed them).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass

from .config import Settings
from .deployment import own_deployment
from .logs import event_line

KICK_HEADER = "Sluice-Kick"
PROCESS_PATH = "/api/jobs/process"
# A kick's drain takes what a burst left ready (its time budget bounds it, not this).
KICK_MAX_JOBS = 1000
# Connecting to our own URL and sending the request: bounded, so a dead URL costs a thread little.
SEND_TIMEOUT_SECONDS = 2.0
# Past a drain's budget by this much, a kick still unanswered no longer counts as in flight.
ANSWER_MARGIN_SECONDS = 15.0

logger = logging.getLogger("sluice.kick")

# Within an API request: the kicks its enqueues started, so the route can make sure each has been
# sent before the function may be frozen (api/_kick.py). None outside a request.
STARTED: ContextVar[list[Shot] | None] = ContextVar("sluice_kicks_started", default=None)


@dataclass(frozen=True)
class Target:
    """Where and how a kick calls: the process URL and its headers (credential included)."""

    url: str
    headers: dict[str, str]
    answer_timeout: float


def target_from_settings(settings: Settings) -> Target | None:
    """The kick's target, or None when kicks are off (JOBS_KICK, or no URL or credential known)."""
    wanted = settings.kick_enabled
    if wanted is False:
        return None
    deployment = own_deployment(settings)
    credential = _credential(settings)
    if deployment is None or credential is None:
        if wanted:
            missing = "JOBS_API_KEYS or CRON_SECRET" if deployment else "JOBS_PUBLIC_URL (or VERCEL_URL)"
            logger.warning(event_line("kick.off", reason=f"JOBS_KICK is on but {missing} is not set"))
        return None
    return Target(
        url=f"{deployment.base_url}{PROCESS_PATH}?maxJobs={KICK_MAX_JOBS}",
        headers={**deployment.headers, **credential, KICK_HEADER: "1"},
        answer_timeout=settings.jobs_drain_budget_ms / 1000 + ANSWER_MARGIN_SECONDS,
    )


def _credential(settings: Settings) -> dict[str, str] | None:
    if settings.admin_keys:
        return {"x-api-key": settings.admin_keys[0]}
    if settings.cron_secret:
        return {"Authorization": f"Bearer {settings.cron_secret}"}
    return None


class Shot:
    """One kick on its way: connect and send in a thread, then read the answer (to know when the
    drain is over). ``sent()`` waits for the first part only."""

    def __init__(self, target: Target, done: Callable[[], None]) -> None:
        self.target, self.done = target, done
        self.sent_event = threading.Event()
        self.outcome = ""  # "ok 200", "HTTP 401", "ConnectionRefusedError", ...
        self.thread = threading.Thread(target=self._run, name="sluice-kick", daemon=True)

    def start(self) -> Shot:
        self.thread.start()
        return self

    def sent(self, timeout: float = SEND_TIMEOUT_SECONDS) -> bool:
        """True once the request has left (or failed to): what must happen before a freeze."""
        return self.sent_event.wait(timeout)

    def _run(self) -> None:
        try:
            self.outcome = self._call()
        except (OSError, http.client.HTTPException) as exc:
            self.outcome = type(exc).__name__
        finally:
            self.sent_event.set()
            # Logged before done(): whoever waits for the kick to be answered also sees why it failed.
            if not self.outcome.startswith("ok"):
                # Nothing is lost: the jobs stay pending for the next cron drain.
                logger.warning(event_line("kick.failed", outcome=self.outcome or "interrupted"))
            self.done()

    def _call(self) -> str:
        parts = urllib.parse.urlsplit(self.target.url)
        https = parts.scheme == "https"
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = kind(parts.hostname or "", parts.port, timeout=SEND_TIMEOUT_SECONDS)
        try:
            path = f"{parts.path}?{parts.query}"
            conn.request("POST", path, body=b"", headers={**self.target.headers, "Content-Length": "0"})
            self.sent_event.set()
            if conn.sock is not None:
                conn.sock.settimeout(self.target.answer_timeout)
            response = conn.getresponse()
            body = response.read(4096)
        finally:
            conn.close()
        if response.status != 200:
            return f"HTTP {response.status}"
        return f"ok {response.status} processed={_processed(body)}"


def _processed(body: bytes) -> object:
    try:
        return json.loads(body).get("processed")
    except (ValueError, AttributeError):
        return None


class Kicker:
    """Collapses kicks: one starts when none is in flight and the interval since the last one
    is over; otherwise one trailing kick is owed. ``clock`` and ``later`` are injectable for tests."""

    def __init__(
        self,
        target: Target,
        min_interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        later: Callable[[float, Callable[[], None]], None] | None = None,
        shoot: Callable[[Target, Callable[[], None]], Shot] | None = None,
    ) -> None:
        self.target, self.min_interval = target, min_interval_s
        self.clock = clock
        self.later = later or _timer
        self.shoot = shoot or (lambda target, done: Shot(target, done).start())
        self.lock = threading.Lock()
        self.in_flight_since: float | None = None
        self.next_at = float("-inf")
        self.owed = False
        self.timer_set = False
        self.started = 0  # kicks started by this process (for tests and the dev server)

    def kick(self) -> Shot | None:
        """After an enqueue made a job ready: the kick started now, or None (one is owed)."""
        with self.lock:
            if not self._may_start():
                self.owed = True
                self._set_timer()
                return None
            self._mark_started()
        shot = self.shoot(self.target, self._answered)
        _remember(shot)
        return shot

    def _may_start(self) -> bool:
        now = self.clock()
        if self.in_flight_since is not None and now - self.in_flight_since < self.target.answer_timeout:
            return False
        # A millisecond early counts as on time: a timer set for next_at may wake just before it.
        return now >= self.next_at - 0.001

    def _mark_started(self) -> None:
        now = self.clock()
        self.in_flight_since, self.next_at, self.owed = now, now + self.min_interval, False
        self.started += 1

    def _set_timer(self) -> None:
        """Caller holds the lock. While a kick is in flight its answer re-checks instead."""
        if self.timer_set or self.in_flight_since is not None:
            return
        self.timer_set = True
        self.later(max(0.0, self.next_at - self.clock()), self._owed_due)

    def _answered(self) -> None:
        with self.lock:
            self.in_flight_since = None
            if self.owed:
                self._set_timer()

    def _owed_due(self) -> None:
        with self.lock:
            self.timer_set = False
            if not self.owed:
                return
            if not self._may_start():
                self._set_timer()
                return
            self._mark_started()
        self.shoot(self.target, self._answered)


def _timer(delay: float, fn: Callable[[], None]) -> None:
    timer = threading.Timer(delay, fn)
    timer.daemon = True
    timer.start()


def _remember(shot: Shot) -> None:
    started = STARTED.get()
    if started is not None:
        started.append(shot)


def from_settings(settings: Settings) -> Kicker | None:
    target = target_from_settings(settings)
    if target is None:
        return None
    return Kicker(target, settings.jobs_kick_min_interval_ms / 1000)
