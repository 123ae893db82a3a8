"""Online metrics bounded relative to the champion: candidate <= champion x (1 + tolerance).

Table tests of the pure rule and of how a spec's metric reaches it: a Prometheus metric is one
reading per arm on one window, with `maxValue`, `tolerance` or both; an in-process latency metric
takes `tolerance` as its sequential test's margin. A missing reading is never a pass.
"""

from __future__ import annotations

import pytest

from baton.analysis.gates import ArmSamples, online_outcome
from baton.analysis.measurements import ArmReadings, Measurement
from baton.analysis.online import ArmStats
from baton.analysis.sanity import relative_gate
from baton.api import AnalysisSpec, Verdict

pytestmark = pytest.mark.unit


def reading(value: float | None, error: str | None = None) -> Measurement:
    return Measurement("q", value, error)


@pytest.mark.parametrize(
    ("champion", "candidate", "tolerance", "verdict", "reason"),
    [
        (reading(1.0), reading(1.2), 0.25, Verdict.PROMOTE, "WithinRelativeBound"),
        (reading(1.0), reading(1.25), 0.25, Verdict.PROMOTE, "WithinRelativeBound"),  # at the bound
        (reading(1.0), reading(1.26), 0.25, Verdict.REJECT, "RelativeBoundBreached"),
        (reading(1.0), reading(0.5), 0.0, Verdict.PROMOTE, "WithinRelativeBound"),  # faster
        (reading(1.0), reading(1.01), 0.0, Verdict.REJECT, "RelativeBoundBreached"),
        (reading(0.0), reading(0.0), 0.5, Verdict.PROMOTE, "WithinRelativeBound"),
        (reading(0.0), reading(0.001), 0.5, Verdict.REJECT, "RelativeBoundBreached"),  # x 1.5 of 0 is 0
        (reading(None), reading(1.0), 0.25, Verdict.INCONCLUSIVE, "NoData"),  # champion never read
        (reading(1.0), reading(None), 0.25, Verdict.INCONCLUSIVE, "NoData"),
        (reading(float("nan")), reading(1.0), 0.25, Verdict.INCONCLUSIVE, "NoData"),
        (
            reading(None, "Prometheus unreachable"),
            reading(1.0),
            0.25,
            Verdict.INCONCLUSIVE,
            "MeasurementFailed",
        ),
        (
            reading(1.0),
            reading(None, "Prometheus unreachable"),
            0.25,
            Verdict.INCONCLUSIVE,
            "MeasurementFailed",
        ),
    ],
)
def test_the_relative_rule(champion, candidate, tolerance, verdict, reason) -> None:
    outcome = relative_gate("ttft", champion, candidate, tolerance=tolerance)
    assert (outcome.verdict, outcome.reason) == (verdict, reason), outcome.message
    if verdict in (Verdict.PROMOTE, Verdict.REJECT):
        (evidence,) = outcome.evidence
        assert evidence.threshold == pytest.approx(champion.value * (1 + tolerance))
        assert (evidence.value, evidence.margin) == (candidate.value, tolerance)


def prometheus_analysis(**bounds: float) -> AnalysisSpec:
    metric = {"name": "ttft", "kind": "latency", "provider": "prometheus", "query": "q", **bounds}
    return AnalysisSpec.model_validate({"metrics": [metric]})


@pytest.mark.parametrize(
    ("bounds", "champion", "candidate", "verdict", "reason"),
    [
        ({"tolerance": 0.25}, 0.4, 0.45, Verdict.PROMOTE, "WithinRelativeBound"),
        ({"tolerance": 0.25}, 0.4, 0.6, Verdict.REJECT, "RelativeBoundBreached"),
        # both bounds: each vetoes on its own
        ({"tolerance": 0.25, "maxValue": 2.0}, 0.4, 0.45, Verdict.PROMOTE, "WithinThreshold"),
        ({"tolerance": 0.25, "maxValue": 2.0}, 2.0, 2.1, Verdict.REJECT, "ThresholdBreached"),
        ({"tolerance": 0.25, "maxValue": 2.0}, 0.4, 1.0, Verdict.REJECT, "RelativeBoundBreached"),
        # absolute only: the champion's reading plays no part
        ({"maxValue": 2.0}, 0.1, 1.9, Verdict.PROMOTE, "WithinThreshold"),
        ({"maxValue": 2.0}, None, 2.1, Verdict.REJECT, "ThresholdBreached"),
    ],
)
def test_a_prometheus_metric_is_judged_on_both_arms_readings(bounds, champion, candidate, verdict, reason):
    champion_reading = None if champion is None else reading(champion)
    external = {"ttft": ArmReadings(candidate=reading(candidate), champion=champion_reading)}
    outcome = online_outcome(prometheus_analysis(**bounds), ArmSamples(), ArmSamples(), external)
    assert (outcome.verdict, outcome.reason) == (verdict, reason), outcome.message


@pytest.mark.parametrize(
    ("external", "reason"),
    [
        ({}, "EvaluationFailed"),  # no reading taken: never judged in-process instead
        ({"ttft": ArmReadings(candidate=reading(0.5))}, "EvaluationFailed"),  # champion not read
        (
            {"ttft": ArmReadings(reading(0.5), reading(None, "no Prometheus URL is configured"))},
            "MeasurementFailed",
        ),
    ],
)
def test_a_prometheus_metric_without_its_readings_is_inconclusive(external, reason) -> None:
    healthy = ArmSamples(requests=500, latency=ArmStats.from_values([0.1, 0.2] * 250))
    outcome = online_outcome(prometheus_analysis(tolerance=0.25), healthy, healthy, external)
    assert (outcome.verdict, outcome.reason) == (Verdict.INCONCLUSIVE, reason)


def test_an_in_process_latency_tolerance_is_the_sequential_tests_margin() -> None:
    """The candidate is 15 % slower, clearly: inside the default 20 %, outside a 10 % tolerance."""
    champion = ArmSamples(requests=2000, latency=ArmStats.from_values([0.9, 1.1] * 1000))
    candidate = ArmSamples(requests=2000, latency=ArmStats.from_values([1.05, 1.25] * 1000))

    def judged(**tolerance: float):
        metric = {"name": "latency", "kind": "latency", **tolerance}
        analysis = AnalysisSpec.model_validate({"metrics": [metric]})
        return online_outcome(analysis, champion, candidate)

    assert judged().verdict == Verdict.PROMOTE
    assert judged(tolerance=0.2).verdict == Verdict.PROMOTE
    tight = judged(tolerance=0.1)
    assert (tight.verdict, tight.reason) == (Verdict.REJECT, "CanaryInferior")
    assert tight.evidence[0].margin == pytest.approx(0.1)  # 10 % of the champion's 1.0 s mean
