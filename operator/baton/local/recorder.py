"""Feeds the in-process metric provider from the data plane's own `/metrics`, as Prometheus would scrape it.

The ingress records every client request (by deployment, revision, status, latency bucket,
structured-output validity) in its Prometheus exposition. Local mode has no Prometheus, so the
loop scrapes that text each tick and adds what grew since the last scrape to `LocalMetrics`,
labelled with the deployment's current *window* (one canary step of one candidate). A canary
step is then judged on exactly the requests that arrived while it ran.

Shadow answers are not client traffic and are left out. Latency histograms give bucket counts,
not single values: each new observation is taken at its bucket's midpoint (`histogram_points`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

from baton.analysis.gates import ArmSamples
from baton.analysis.online import ArmStats, counter_increase, histogram_points
from baton.analysis.providers.inprocess import InProcessProvider, LocalMetrics, SeriesQuery
from baton_serving.metrics import CLIENT_ENDPOINTS

NO_WINDOW = "-"


def _key(name: str, labels: Mapping[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


class MetricsRecorder:
    """Cumulative exposition in, windowed increments out."""

    def __init__(self, metrics: LocalMetrics | None = None) -> None:
        self.metrics = metrics or LocalMetrics()
        self.provider = InProcessProvider(self.metrics)
        self.windows: dict[str, str] = {}
        self._last: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}

    def _delta(self, name: str, labels: Mapping[str, str], value: float) -> float:
        key = _key(name, labels)
        previous = self._last.get(key, 0.0)
        self._last[key] = value
        return counter_increase(value, previous)

    def ingest(self, exposition: str) -> None:
        buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        for family in text_string_to_metric_families(exposition):
            for sample in family.samples:
                labels = sample.labels
                deployment, revision = labels.get("deployment"), labels.get("revision")
                if (
                    not deployment
                    or not revision
                    or labels.get("endpoint", "chat_completions") not in CLIENT_ENDPOINTS
                ):
                    continue
                if sample.name == "baton_request_duration_seconds_bucket":
                    growth = self._delta(sample.name, labels, sample.value)
                    buckets[(deployment, revision)].append((float(labels["le"]), growth))
                    continue
                series = {
                    "baton_requests_total": "requests",
                    "baton_request_errors_total": "errors",
                    "baton_structured_outputs_total": "structured",
                }.get(sample.name)
                if series is None:
                    continue
                growth = self._delta(sample.name, labels, sample.value)
                if growth <= 0:
                    continue
                window = self._labels(deployment, revision)
                self.metrics.increment(series, window, growth)
                if series == "structured" and labels.get("valid") == "true":
                    self.metrics.increment("valid", window, growth)
        for (deployment, revision), cumulative in buckets.items():
            self._observe_buckets(self._labels(deployment, revision), cumulative)

    def _observe_buckets(self, labels: dict[str, str], cumulative: list[tuple[float, float]]) -> None:
        # Bucket growths are cumulative over `le`; summed here over endpoints.
        by_bound: dict[float, float] = defaultdict(float)
        for bound, growth in cumulative:
            by_bound[bound] += growth
        for value, count in histogram_points(by_bound):
            for _ in range(count):
                self.metrics.observe("latency", labels, value)

    def _labels(self, deployment: str, revision: str) -> dict[str, str]:
        return {
            "deployment": deployment,
            "revision": revision,
            "window": self.windows.get(deployment, NO_WINDOW),
        }

    def samples(self, deployment: str, revision: str, window: str) -> ArmSamples:
        """What one revision answered in one window."""
        labels = {"deployment": deployment, "revision": revision, "window": window}

        def count(series: str) -> int:
            value = self.provider.query(SeriesQuery(series, labels)).value
            return int(value or 0)

        latency = self.provider.arm_stats("latency", labels)
        return ArmSamples(
            requests=count("requests"),
            errors=count("errors"),
            latency=latency if latency.n else ArmStats(),
            structured=count("structured"),
            valid=count("valid"),
        )
