"""Replays of the failures that made other tools promote broken versions: none may end in Promote.

- argo-rollouts #4479: analysis "Successful" although every measurement errored;
- argo-rollouts #3562: promoted after the analysis job failed;
- Kayenta: a metric with no data passes; a canary with no metric configured passes;
- empty PromQL result treated as a pass;
- ome #781: benchmark "Completed" with 100 % HTTP 404s.
"""

from __future__ import annotations

import pytest

from baton.analysis.decision import decide
from baton.analysis.measurements import Measurement, PairedScores
from baton.analysis.offline import OfflinePolicy, offline_gate
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import SanityLimits, check_evaluation, evaluation_failed, threshold_gate
from baton.api.decision import Decision, Gate, Verdict

pytestmark = pytest.mark.unit

PASSING_BENCHMARK = PairedScores(
    item_ids=tuple(f"q{index}" for index in range(200)),
    champion=(0.0,) * 100 + (1.0,) * 100,
    candidate=(1.0,) * 200,
    groups=(None,) * 200,
    n_errors=0,
    n_attempted=400,
)


def promoting_gate() -> GateOutcome:
    outcome = offline_gate(PASSING_BENCHMARK, OfflinePolicy(benchmark="medical-qa"))
    assert outcome.verdict == Verdict.PROMOTE  # the control: this gate alone would promote
    return outcome


def test_every_measurement_errored_is_inconclusive() -> None:
    readings = [
        Measurement(query="rate(errors[1m])", value=None, error="Prometheus unreachable") for _ in range(5)
    ]
    outcomes = [threshold_gate("error-rate", reading, max_value=0.01) for reading in readings]
    assert {outcome.verdict for outcome in outcomes} == {Verdict.INCONCLUSIVE}
    decision = decide([promoting_gate(), *outcomes])
    assert decision.verdict == Verdict.INCONCLUSIVE
    assert decision.reason == "MeasurementFailed"


def test_failed_evaluation_job_is_inconclusive() -> None:
    decision = decide(
        [promoting_gate(), evaluation_failed("medical-qa", "benchmark job exited with code 137")]
    )
    assert decision.verdict == Verdict.INCONCLUSIVE
    assert decision.reason == "EvaluationFailed"


def test_no_metric_configured_is_inconclusive() -> None:
    decision = decide([])
    assert decision.verdict == Verdict.INCONCLUSIVE
    assert decision.reason == "NoMetricsConfigured"


def test_empty_promql_result_is_inconclusive() -> None:
    empty = Measurement(query='sum(rate(baton_requests_total{revision="v2"}[5m]))', value=None)
    outcome = threshold_gate("request-rate", empty, min_value=0.1)
    assert outcome.verdict == Verdict.INCONCLUSIVE
    assert outcome.reason == "NoData"
    assert decide([promoting_gate(), outcome]).verdict == Verdict.INCONCLUSIVE


def test_all_404s_is_inconclusive_even_if_the_few_answers_look_great() -> None:
    scores = PairedScores(item_ids=(), champion=(), candidate=(), groups=(), n_errors=400, n_attempted=400)
    outcome = offline_gate(scores, OfflinePolicy(benchmark="medical-qa"))
    assert outcome.verdict == Verdict.INCONCLUSIVE
    assert outcome.reason == "EvaluationErrors"
    assert outcome.evidence[0].n_errors == 400


def test_error_rate_over_the_bound_is_inconclusive_despite_a_significant_win() -> None:
    flaky = PairedScores(
        item_ids=PASSING_BENCHMARK.item_ids,
        champion=PASSING_BENCHMARK.champion,
        candidate=PASSING_BENCHMARK.candidate,
        groups=PASSING_BENCHMARK.groups,
        n_errors=40,
        n_attempted=440,
    )
    outcome = offline_gate(
        flaky, OfflinePolicy(benchmark="medical-qa", limits=SanityLimits(max_error_rate=0.05))
    )
    assert outcome.verdict == Verdict.INCONCLUSIVE


def test_too_few_valid_samples_is_inconclusive() -> None:
    outcome = check_evaluation(
        "medical-qa",
        n_champion=12,
        n_candidate=12,
        n_errors=0,
        n_attempted=24,
        limits=SanityLimits(),
        alpha=0.05,
    )
    assert outcome.verdict == Verdict.INCONCLUSIVE
    assert outcome.reason == "TooFewSamples"


def test_one_failing_metric_vetoes_and_is_not_averaged_away() -> None:
    slow = threshold_gate("p99-latency", Measurement(query="p99", value=3.2), max_value=2.0)
    decision = decide([promoting_gate(), promoting_gate(), promoting_gate(), slow])
    assert decision.verdict == Verdict.REJECT
    assert decision.reason == "ThresholdBreached"
    assert len(decision.evidence) == 4  # the deciding gate first, then all the others


def test_reject_outranks_inconclusive_and_only_unanimous_passes_promote() -> None:
    missing = threshold_gate("error-rate", Measurement(query="q", value=None), max_value=0.01)
    slow = threshold_gate("p99-latency", Measurement(query="p99", value=3.2), max_value=2.0)
    assert decide([missing, slow]).verdict == Verdict.REJECT
    assert decide([promoting_gate(), promoting_gate()]).verdict == Verdict.PROMOTE


def test_outcome_becomes_a_valid_status_decision() -> None:
    decision = decide([promoting_gate()]).to_decision(candidate="medical-v2", time="2026-05-29T06:00:00Z")
    assert isinstance(decision, Decision)
    wire = decision.to_wire()
    assert wire["verdict"] == "Promote"
    assert wire["gate"] == Gate.OFFLINE
    assert wire["evidence"][0]["test"] == "mcnemar-exact"
    assert wire["evidence"][0]["nCandidate"] == 200
    assert wire["evidence"][0]["pValue"] < 0.05
