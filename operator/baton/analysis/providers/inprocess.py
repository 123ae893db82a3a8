"""In-process provider for local mode (`baton up`): reads metrics the local shell records in memory.

On a laptop there is no Prometheus; the local shell records each request's outcome into a
`LocalMetrics` store, and the analysis reads it through the same provider interface as in a
cluster. Counters add up; observations (latencies) keep count, sum and sum of squares, which is
exactly what the sequential test needs (`arm_stats`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from baton.analysis.measurements import Measurement
from baton.analysis.online import ArmStats

SeriesField = Literal["value", "count", "sum", "sum_sq", "mean"]


@dataclass(frozen=True)
class SeriesQuery:
    """Sum of one field over every series of `name` whose labels include `labels`."""

    name: str
    labels: Mapping[str, str]
    field: SeriesField = "value"

    def describe(self) -> str:
        selector = ",".join(f'{key}="{value}"' for key, value in sorted(self.labels.items()))
        return f"{self.field}({self.name}{{{selector}}})"


@dataclass
class _Series:
    value: float = 0.0
    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0


class LocalMetrics:
    """Thread-safe in-memory counters and observation summaries, keyed by metric name and labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str, frozenset[tuple[str, str]]], _Series] = {}

    def increment(self, name: str, labels: Mapping[str, str], amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"{name}: a counter only goes up, got {amount}")
        with self._lock:
            self._get(name, labels).value += amount

    def observe(self, name: str, labels: Mapping[str, str], value: float) -> None:
        with self._lock:
            series = self._get(name, labels)
            series.count += 1
            series.total += value
            series.total_sq += value * value

    def _get(self, name: str, labels: Mapping[str, str]) -> _Series:
        return self._series.setdefault((name, frozenset(labels.items())), _Series())

    def matching(self, name: str, labels: Mapping[str, str]) -> list[_Series]:
        wanted = set(labels.items())
        with self._lock:
            return [
                _Series(series.value, series.count, series.total, series.total_sq)
                for (series_name, series_labels), series in self._series.items()
                if series_name == name and wanted <= series_labels
            ]


class InProcessProvider:
    """Reads a `LocalMetrics` store; no series matching a query means no data, as with Prometheus."""

    def __init__(self, metrics: LocalMetrics) -> None:
        self.metrics = metrics

    def is_online(self) -> bool:
        return True

    def query(self, query: SeriesQuery) -> Measurement:
        found = self.metrics.matching(query.name, query.labels)
        if not found:
            return Measurement(query=query.describe(), value=None)
        count = sum(series.count for series in found)
        total = math.fsum(series.total for series in found)
        values = {
            "value": math.fsum(series.value for series in found),
            "count": float(count),
            "sum": total,
            "sum_sq": math.fsum(series.total_sq for series in found),
            "mean": total / count if count else None,
        }
        return Measurement(query=query.describe(), value=values[query.field])

    def arm_stats(self, name: str, labels: Mapping[str, str]) -> ArmStats:
        """Cumulative observation statistics of one arm, for the sequential test."""
        found = self.metrics.matching(name, labels)
        return ArmStats(
            n=sum(series.count for series in found),
            total=math.fsum(series.total for series in found),
            total_sq=math.fsum(series.total_sq for series in found),
        )
