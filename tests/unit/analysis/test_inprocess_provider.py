"""The in-process provider that local mode reads: counters and observations recorded by the shell."""

from __future__ import annotations

import threading

import pytest

from baton.analysis.online import ArmStats, MetricKind, SequentialState, SequentialTest, assess
from baton.analysis.providers.inprocess import InProcessProvider, LocalMetrics, SeriesQuery
from baton.analysis.sanity import threshold_gate
from baton.api.decision import Verdict

pytestmark = pytest.mark.unit

V1 = {"deployment": "medical", "revision": "v1"}
V2 = {"deployment": "medical", "revision": "v2"}


def test_counters_sum_over_series_whose_labels_include_the_query() -> None:
    metrics = LocalMetrics()
    metrics.increment("requests", V1 | {"code": "200"}, 90)
    metrics.increment("requests", V1 | {"code": "500"}, 10)
    metrics.increment("requests", V2 | {"code": "200"}, 7)
    provider = InProcessProvider(metrics)
    assert provider.is_online()
    assert provider.query(SeriesQuery("requests", V1)).value == 100
    assert provider.query(SeriesQuery("requests", V1 | {"code": "500"})).value == 10
    assert provider.query(SeriesQuery("requests", {"deployment": "medical"})).value == 107


def test_no_matching_series_is_no_data_and_never_passes() -> None:
    provider = InProcessProvider(LocalMetrics())
    reading = provider.query(SeriesQuery("requests", V2))
    assert reading.value is None
    assert reading.query == 'value(requests{deployment="medical",revision="v2"})'
    assert threshold_gate("requests", reading, min_value=1).verdict == Verdict.INCONCLUSIVE


def test_observations_keep_count_sum_and_squares_under_concurrent_writers() -> None:
    metrics = LocalMetrics()

    def record() -> None:
        for _ in range(1000):
            metrics.observe("latency_seconds", V2, 0.5)

    threads = [threading.Thread(target=record) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    provider = InProcessProvider(metrics)
    assert provider.query(SeriesQuery("latency_seconds", V2, "count")).value == 4000
    assert provider.query(SeriesQuery("latency_seconds", V2, "mean")).value == pytest.approx(0.5)
    assert provider.arm_stats("latency_seconds", V2) == ArmStats(4000, 2000.0, 1000.0)


def test_counters_refuse_to_go_down() -> None:
    with pytest.raises(ValueError, match="requests"):
        LocalMetrics().increment("requests", V1, -1)


def test_arm_stats_feed_the_sequential_test() -> None:
    metrics = LocalMetrics()
    for index in range(400):
        metrics.observe("latency_seconds", V1, 0.20 + 0.01 * (index % 5))
        metrics.observe("latency_seconds", V2, 0.40 + 0.01 * (index % 5))
    provider = InProcessProvider(metrics)
    state = SequentialState(
        champion=provider.arm_stats("latency_seconds", V1),
        candidate=provider.arm_stats("latency_seconds", V2),
    )
    test = SequentialTest(metric="latency", kind=MetricKind.MEAN, higher_is_better=False, mixture_sd=0.05)
    outcome = assess(test, state)
    assert outcome.verdict == Verdict.REJECT
    assert outcome.evidence[0].effect == pytest.approx(-0.2)
