"""Prometheus metrics, read from the database on each scrape.

Serverless functions keep nothing between calls, so every value comes from the tables: job counts
from the status query, drain history from ``sluice_drains``. Each scrape builds a fresh registry
with one collector over a snapshot, so nothing accumulates in the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .core import Service
from .db import guarded
from .models import JOB_STATUSES, QueueStatus
from .store import jobs as job_store
from .store import metrics as metrics_store
from .store.metrics import OUTCOMES, DrainStats

# The text format Prometheus scrapes (prometheus_client's generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DRAIN_WINDOW_SECONDS = 86_400
# Drains run within a budget (25 s by default, 800 s at most): buckets from 50 ms to 15 min.
DRAIN_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 300.0, 900.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    status: QueueStatus
    drains: DrainStats
    job_types: tuple[str, ...]


class SnapshotCollector:
    """A prometheus_client collector over one snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        # lazy: only a scrape loads prometheus_client
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        status, drains = self.snap.status, self.snap.drains
        jobs = GaugeMetricFamily("sluice_jobs", "Jobs by status.", labels=["status"])
        for name in JOB_STATUSES:
            jobs.add_metric([name], status.counts.get(name, 0))
        yield jobs

        by_type = GaugeMetricFamily(
            "sluice_jobs_by_type", "Jobs by type and status.", labels=["type", "status"]
        )
        # Registered types show up with zeros, and every type has all five statuses, so a series
        # drops to 0 instead of vanishing.
        for type_ in sorted(set(self.snap.job_types) | set(status.by_type)):
            counts = status.by_type.get(type_, {})
            for name in JOB_STATUSES:
                by_type.add_metric([type_, name], counts.get(name, 0))
        yield by_type

        yield GaugeMetricFamily("sluice_ready_jobs", "Pending jobs that are due now.", value=status.ready)
        yield GaugeMetricFamily(
            "sluice_scheduled_jobs", "Pending jobs due later (runAt in the future).", value=status.scheduled
        )
        yield GaugeMetricFamily(
            "sluice_oldest_ready_age_seconds",
            "Seconds the oldest ready job has waited past its runAt (0 when none is ready).",
            value=status.oldest_ready_age_seconds or 0.0,
        )

        runs = CounterMetricFamily("sluice_drains", "Drains recorded.", labels=["source", "stopped_by"])
        for (source, stopped_by), n in sorted(drains.drains.items()):
            runs.add_metric([source, stopped_by], n)
        yield runs

        outcomes = CounterMetricFamily(
            "sluice_drain_jobs", "Job attempts by outcome over all recorded drains.", labels=["outcome"]
        )
        for outcome in OUTCOMES:
            outcomes.add_metric([outcome], drains.outcomes[outcome])
        yield outcomes

        duration = HistogramMetricFamily(
            "sluice_drain_duration_seconds",
            f"Duration of the drains of the last {DRAIN_WINDOW_SECONDS // 3600} h (a window, not a counter).",
        )
        buckets = [(str(float(bound)), n) for bound, n in drains.recent_buckets]
        duration.add_metric([], [*buckets, ("+Inf", drains.recent_count)], drains.recent_seconds)
        yield duration

        last = status.last_drain
        yield GaugeMetricFamily(
            "sluice_last_drain_timestamp_seconds",
            "Unix time of the last drain that did work (0: none yet).",
            value=last.at.timestamp() if last else 0.0,
        )
        idle = drains.last_idle_at
        yield GaugeMetricFamily(
            "sluice_last_idle_drain_timestamp_seconds",
            "Unix time of the last drain that found nothing to do (0: none yet): cron is alive.",
            value=idle.timestamp() if idle else 0.0,
        )


class Metrics(Service):
    """The facade's ``metrics``: what a scrape reads and renders."""

    @guarded
    def snapshot(self) -> Snapshot:
        """Everything a scrape reports, read on one connection."""
        with self.core.reader.connect() as conn:
            status = job_store.queue_status(conn, None)
            drains = metrics_store.drain_stats(conn, DRAIN_WINDOW_SECONDS, DRAIN_DURATION_BUCKETS)
        return Snapshot(status, drains, tuple(job_type.name for job_type in self.core.registry))

    def render(self) -> bytes:
        """The exposition text for one scrape; raises Unavailable when the database is unreachable."""
        # lazy: only a scrape loads prometheus_client
        from prometheus_client import CollectorRegistry, generate_latest

        snap = self.snapshot()
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snap))
        body: bytes = generate_latest(registry)
        return body
