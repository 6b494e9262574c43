"""Prometheus text exposition without a client library: counters and one latency histogram.

Labels use the route template (`/v1/deals/{deal_id}`), never the raw path, so a scan of ids
cannot blow up the number of series.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _labels(pairs: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(str(v))}"' for k, v in pairs.items()) + "}"


class Metrics:
    """Thread-safe request metrics for one app."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)
        self.errors: dict[tuple[str, str], int] = defaultdict(int)
        self.scored: dict[str, int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = defaultdict(float)
        self.swaps: dict[str, int] = defaultdict(int)
        self.in_flight = 0  # requests started and not yet answered (what a drain waits for)
        self.refusals: dict[str, int] = defaultdict(int)

    def started(self) -> None:
        with self._lock:
            self.in_flight += 1

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.in_flight -= 1
            self.requests[(method, route, str(status))] += 1
            if status >= 500:
                self.errors[(method, route)] += 1
            counts = self.buckets.setdefault((method, route), [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1  # +Inf, which is also the count
            self.sums[(method, route)] += seconds

    def count_scored(self, model: str, n: int) -> None:
        with self._lock:
            self.scored[model] += n

    def count_swap(self, model: str) -> None:
        with self._lock:
            self.swaps[model] += 1

    def count_refusal(self, model: str) -> None:
        with self._lock:
            self.refusals[model] += 1

    def render(self, model_versions: Mapping[str, str | None]) -> str:
        lines: list[str] = []
        with self._lock:
            lines += [
                "# HELP forecast_http_requests_total HTTP requests by method, route and status.",
                "# TYPE forecast_http_requests_total counter",
            ]
            for (method, route, status), n in sorted(self.requests.items()):
                labels = _labels({"method": method, "route": route, "status": status})
                lines.append(f"forecast_http_requests_total{labels} {n}")
            lines += [
                "# HELP forecast_http_requests_in_flight Requests being answered now.",
                "# TYPE forecast_http_requests_in_flight gauge",
                f"forecast_http_requests_in_flight {self.in_flight}",
                "# HELP forecast_http_errors_total Requests answered with a 5xx status.",
                "# TYPE forecast_http_errors_total counter",
            ]
            for (method, route), n in sorted(self.errors.items()):
                labels = _labels({"method": method, "route": route})
                lines.append(f"forecast_http_errors_total{labels} {n}")
            lines += [
                "# HELP forecast_http_request_duration_seconds Request latency.",
                "# TYPE forecast_http_request_duration_seconds histogram",
            ]
            name = "forecast_http_request_duration_seconds"
            for (method, route), counts in sorted(self.buckets.items()):
                base = {"method": method, "route": route}
                for bound, n in zip((*BUCKETS, "+Inf"), counts, strict=True):
                    lines.append(f"{name}_bucket{_labels({**base, 'le': str(bound)})} {n}")
                lines.append(f"{name}_sum{_labels(base)} {self.sums[(method, route)]:.6f}")
                lines.append(f"{name}_count{_labels(base)} {counts[-1]}")
            lines += [
                "# HELP forecast_predictions_total Scores served, by model.",
                "# TYPE forecast_predictions_total counter",
            ]
            for model, n in sorted(self.scored.items()):
                lines.append(f"forecast_predictions_total{_labels({'model': model})} {n}")
            lines += [
                "# HELP forecast_model_loads_total Champion versions loaded and swapped in.",
                "# TYPE forecast_model_loads_total counter",
            ]
            for model, n in sorted(self.swaps.items()):
                lines.append(f"forecast_model_loads_total{_labels({'model': model})} {n}")
            lines += [
                "# HELP forecast_model_refusals_total New champion versions refused (unloadable).",
                "# TYPE forecast_model_refusals_total counter",
            ]
            for model, n in sorted(self.refusals.items()):
                lines.append(f"forecast_model_refusals_total{_labels({'model': model})} {n}")
        lines += [
            "# HELP forecast_model_version Serving version of each model (0: none loaded).",
            "# TYPE forecast_model_version gauge",
        ]
        for model, version in sorted(model_versions.items()):
            value = version if version and version.isdigit() else "0"
            lines.append(f"forecast_model_version{_labels({'model': model})} {value}")
        return "\n".join(lines) + "\n"
