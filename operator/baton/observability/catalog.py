"""The metrics baton exports, read from the prometheus_client objects that define them.

One list serves the docs' metrics reference and the tests that check that dashboards and alerts
name only metrics that exist, so a renamed metric breaks a test instead of a dashboard.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from prometheus_client.metrics import MetricWrapperBase

DATA_PLANE = "data plane (`/metrics` of every Ray Serve pool)"
CONTROL_PLANE = "operator (`/metrics` on `--metrics-port`)"
ROLLOUT = "control plane (`RolloutMetrics`, fed by the shell that writes status)"
# Modules that define metrics at import time, and who exports them.
METRIC_MODULES = {
    "baton_serving.metrics": DATA_PLANE,
    "baton.k8s.controller": CONTROL_PLANE,
    "baton.k8s.kube": CONTROL_PLANE,
}

# The sample names each metric type exposes in the text format.
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


@dataclass(frozen=True)
class MetricFamily:
    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    component: str

    @property
    def exposed_name(self) -> str:
        """The name a query uses: counters gain `_total`; histograms are queried through suffixes."""
        return self.name + "_total" if self.type == "counter" else self.name

    @property
    def sample_names(self) -> tuple[str, ...]:
        return tuple(self.name + suffix for suffix in _SAMPLE_SUFFIXES[self.type])


def _metric_objects() -> list[tuple[MetricWrapperBase, str]]:
    from baton.observability.rollout_metrics import RolloutMetrics

    holders = [(importlib.import_module(name), component) for name, component in METRIC_MODULES.items()]
    holders.append((RolloutMetrics(), ROLLOUT))
    return [
        (value, component)
        for holder, component in holders
        for value in vars(holder).values()
        if isinstance(value, MetricWrapperBase)
    ]


def families() -> list[MetricFamily]:
    found = []
    for metric, component in _metric_objects():
        # prometheus_client keeps label names private; they are fixed when the metric is defined.
        labels = tuple(metric._labelnames)
        for family in metric.describe():
            found.append(MetricFamily(family.name, family.type, family.documentation, labels, component))
    return sorted(found, key=lambda family: family.name)


def sample_names() -> set[str]:
    return {name for family in families() for name in family.sample_names}
