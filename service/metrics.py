"""Prometheus metrics with `prometheus_client`: requests, latency, scores and the champions.

Labels use the route template (`/v1/deals/{deal_id}`), never the raw path, so a scan of ids
cannot blow up the number of series. With several workers (`python -m service.serve --workers
N`) each process writes its values to `PROMETHEUS_MULTIPROC_DIR` and every worker answers
`/metrics` with the sum over all of them (prometheus_client's multiprocess mode), plus each
worker's own count of answered requests under its `pid`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import asdict

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from service.logsink import Counts

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # set by the supervisor for its workers


class Metrics:
    """One app's metrics (each app its own registry: tests run several in one process)."""

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` twin of every counter: half the text, no use
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self.in_flight = 0  # requests started and not yet answered (what a drain waits for)
        registry = self.registry
        self.requests = Counter(
            "forecast_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.errors = Counter(
            "forecast_http_errors",
            "Requests answered with a 5xx status.",
            ["method", "route"],
            registry=registry,
        )
        self.latency = Histogram(
            "forecast_http_request_duration_seconds",
            "Request latency.",
            ["method", "route"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.flight = Gauge(
            "forecast_http_requests_in_flight",
            "Requests being answered now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.answered = Gauge(
            "forecast_worker_requests_answered",
            "Requests this worker process answered (one series per worker's pid).",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.scored = Counter(
            "forecast_predictions", "Scores served, by model.", ["model"], registry=registry
        )
        self.swaps = Counter(
            "forecast_model_loads",
            "Champion versions loaded and swapped in.",
            ["model"],
            registry=registry,
        )
        self.refusals = Counter(
            "forecast_model_refusals",
            "New champion versions refused (unloadable, or not what the logged model answers).",
            ["model"],
            registry=registry,
        )
        self.store_loads = Counter(
            "forecast_store_loads",
            "Loads of the CRM store, by every process (at start, a reload, a new import).",
            registry=registry,
        )
        self.log_rows = Counter(
            "forecast_log_rows",
            "Prediction and audit log rows by what became of them: written, refused (set aside "
            "with the reason), spooled (kept on disk while the database was away), replayed "
            "(spooled rows written since), lost (the spool or the disk full).",
            ["outcome"],
            registry=registry,
        )
        self.versions = Gauge(
            "forecast_model_version",
            "Serving version of each model (0: none loaded).",
            ["model"],
            registry=registry,
            multiprocess_mode="livemax",
        )

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1
        self.flight.inc()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
        self.flight.dec()
        self.answered.inc()
        self.requests.labels(method, route, str(status)).inc()
        if status >= 500:
            self.errors.labels(method, route).inc()
        self.latency.labels(method, route).observe(seconds)

    def count_scored(self, model: str, n: int) -> None:
        self.scored.labels(model).inc(n)

    def count_swap(self, model: str) -> None:
        self.swaps.labels(model).inc()

    def count_refusal(self, model: str) -> None:
        self.refusals.labels(model).inc()

    def count_log_rows(self, counts: Counts) -> None:
        for outcome, n in asdict(counts).items():
            if n:
                self.log_rows.labels(outcome).inc(n)

    def render(self, model_versions: Mapping[str, str | None]) -> str:
        """The exposition text: this process's figures, or with several workers all of theirs."""
        for model, version in model_versions.items():
            self.versions.labels(model).set(int(version) if version and version.isdigit() else 0)
        if os.environ.get(MULTIPROCESS_DIR):
            merged = CollectorRegistry()
            MultiProcessCollector(merged)
            return generate_latest(merged).decode()
        return generate_latest(self.registry).decode()
