"""Replays of the failures that made other tools promote broken versions, on the path that ships.

Each incident is replayed through `baton.rollout.reconcile` (the state machine both shells drive),
with gate outcomes computed by `baton.analysis.gates` from the measurements the incident had, at
the shells' sampling cadence: none may end Promoted.

- argo-rollouts #4479: AnalysisRun "Successful" although every measurement errored or failed;
- argo-rollouts #3562/#4393: "Successful" after the analysis Job itself failed;
- argo-rollouts #3850: an Inconclusive background analysis is re-run until the pause ends, then
  the rollout is promoted;
- flagger #1581 (and #1815): a configured metric that is never actually evaluated always passes;
- Kayenta: a metric with no data (NODATA) passes; a canary with no metric configured passes;
- ome #781: a benchmark "Completed" with 100 % HTTP 404s.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from baton.analysis.gates import ArmSamples, offline_outcome, online_outcome
from baton.analysis.measurements import ArmReadings, BenchmarkResult, BenchmarkRun, ItemResult, Measurement
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import evaluation_failed
from baton.api import ModelDeployment, Phase, Verdict
from baton.api.benchmark import BenchmarkItem, BenchmarkSpec
from baton.rollout import CANARY_SAMPLE_INTERVAL_S, Observations, OfflineResult, OnlineResult
from tests.unit.rollout.helpers import (
    CANDIDATE,
    CHAMPION,
    NOW,
    advance,
    candidate,
    deployment,
    healthy,
    in_phase,
)

pytestmark = pytest.mark.unit

FINAL = {Phase.PROMOTED, Phase.REJECTED, Phase.INCONCLUSIVE, Phase.ROLLED_BACK, Phase.FAILED}
BENCHMARK = "medical-qa"
ITEMS = tuple(BenchmarkItem(id=f"q{index}", prompt="dose?", expected="5 mg") for index in range(200))
SPEC = BenchmarkSpec(domain="medical", inline=list(ITEMS[:1]), scorer={"type": "exact"})
ERROR_RATE = {"name": "error-rate", "kind": "errorRate", "maxValue": 0.05}
HEALTHY_TRAFFIC = (ArmSamples(requests=2700), ArmSamples(requests=300))

Sampler = Callable[[ModelDeployment, int, datetime], GateOutcome]


def benchmark_result(
    champion_score: float, candidate_score: float, error: str | None = None
) -> BenchmarkResult:
    run = BenchmarkRun(BENCHMARK, "medical", CHAMPION, CANDIDATE, SPEC, ITEMS)
    results = tuple(
        ItemResult(item.id, revision, None if error else score, error, 0.01)
        for item in ITEMS
        for revision, score in ((CHAMPION, champion_score), (CANDIDATE, candidate_score))
    )
    return BenchmarkResult(run, results)


def offline(resource: ModelDeployment, result: BenchmarkResult) -> OfflineResult:
    outcome = offline_outcome(resource.spec.analysis, {BENCHMARK: result})
    return OfflineResult(CANDIDATE, (BENCHMARK,), outcome)


def better_offline(resource: ModelDeployment) -> OfflineResult:
    """The control for every online replay: this benchmark alone would let the candidate through."""
    result = offline(resource, benchmark_result(0.0, 1.0))
    assert result.outcome.verdict == Verdict.PROMOTE
    return result


def live(*arms: ArmSamples, external: dict[str, ArmReadings] | None = None) -> Sampler:
    """The window's samples, the same at every look (what the shells' samplers would hand over)."""
    return lambda resource, step, now: online_outcome(resource.spec.analysis, *arms, external)


def drive(
    resource: ModelDeployment,
    sample: Sampler,
    *,
    offline_result: OfflineResult | None,
    horizon_s: float = 7200,
) -> ModelDeployment:
    """Run the shipped rollout from Benchmarking at the shells' sampling cadence until it rests."""
    offered = [candidate()]
    now = NOW
    while now < NOW + timedelta(seconds=horizon_s):
        status = resource.status
        assert status is not None
        if status.phase in FINAL and status.candidate is None:
            return resource
        online = None
        if status.phase == Phase.CANARY and status.canary is not None:
            step = status.canary.step
            online = OnlineResult(CANDIDATE, step, 100, sample(resource, step, now), now)
        observations = Observations(
            revisions=healthy(CHAMPION, CANDIDATE), offline=offline_result, online=online
        )
        resource, _ = advance(resource, offered, observations, now)
        now += timedelta(seconds=CANARY_SAMPLE_INTERVAL_S)
    raise AssertionError(f"no resting phase after {horizon_s} s: {resource.status}")


def benchmarking(**analysis: object) -> ModelDeployment:
    return in_phase(Phase.BENCHMARKING, analysis={"benchmarks": [{"name": BENCHMARK}], **analysis})


def ended(resource: ModelDeployment) -> tuple[Phase, str]:
    status = resource.status
    assert status is not None and status.champion is not None
    assert status.champion.version == "v1", "the candidate was promoted"
    assert [decision.verdict for decision in status.history] != [Verdict.PROMOTE]
    return status.phase, status.history[0].reason


def test_the_control_promotes_on_passing_gates() -> None:
    """Without the incident, the same replay promotes: the tests below can fail."""
    resource = benchmarking(metrics=[ERROR_RATE])
    done = drive(resource, live(*HEALTHY_TRAFFIC), offline_result=better_offline(resource))
    assert (done.status.phase, done.status.champion.version) == (Phase.PROMOTED, "v2")


def test_argo_rollouts_4479_every_measurement_errored_is_inconclusive() -> None:
    metric = {"name": "ttft", "kind": "latency", "provider": "prometheus", "query": "q", "maxValue": 2.0}
    resource = benchmarking(metrics=[metric])
    errored = {"ttft": ArmReadings(Measurement("q", None, "Prometheus unreachable: ConnectError"))}
    done = drive(resource, live(*HEALTHY_TRAFFIC, external=errored), offline_result=better_offline(resource))
    assert ended(done) == (Phase.INCONCLUSIVE, "MeasurementFailed")


def test_argo_rollouts_3562_a_failed_evaluation_job_is_inconclusive() -> None:
    resource = benchmarking()
    failed = OfflineResult(CANDIDATE, (BENCHMARK,), evaluation_failed(BENCHMARK, "job exited with code 137"))
    done = drive(resource, live(*HEALTHY_TRAFFIC), offline_result=failed)
    assert ended(done) == (Phase.INCONCLUSIVE, "EvaluationFailed")


def test_argo_rollouts_3850_an_analysis_inconclusive_until_the_pause_ends_never_promotes() -> None:
    """Too little traffic for minSamples: the step waits past its pause, then ends Inconclusive."""
    resource = benchmarking(metrics=[ERROR_RATE], minSamples=200)
    starved = live(ArmSamples(requests=900), ArmSamples(requests=40))
    done = drive(resource, starved, offline_result=better_offline(resource))
    assert ended(done) == (Phase.INCONCLUSIVE, "TooFewSamples")
    assert done.status.record[-1].evidence[0].n_candidate == 40


def test_flagger_1581_a_metric_that_is_never_evaluated_never_passes() -> None:
    """A validity metric on a deployment whose clients never ask for structured output."""
    resource = benchmarking(metrics=[{"name": "schema-valid", "kind": "validity"}])
    done = drive(resource, live(*HEALTHY_TRAFFIC), offline_result=better_offline(resource))
    assert ended(done) == (Phase.INCONCLUSIVE, "TooFewSamples")


def test_kayenta_nodata_is_inconclusive() -> None:
    metric = {"name": "p99", "kind": "latency", "provider": "prometheus", "query": "q", "maxValue": 2.0}
    resource = benchmarking(metrics=[metric])
    empty = {"p99": ArmReadings(Measurement("q", None))}
    done = drive(resource, live(*HEALTHY_TRAFFIC, external=empty), offline_result=better_offline(resource))
    assert ended(done) == (Phase.INCONCLUSIVE, "NoData")


def test_kayenta_no_metric_configured_is_refused_unless_declared() -> None:
    with pytest.raises(ValidationError, match="no gate configured"):
        deployment(analysis={"benchmarks": [], "metrics": []})
    declared = deployment(analysis={"ungated": True})
    assert declared.spec.analysis.ungated


def test_ome_781_a_benchmark_of_404s_is_inconclusive_even_if_the_few_answers_look_great() -> None:
    resource = benchmarking()
    all_404 = offline(resource, benchmark_result(0.0, 1.0, error="HTTP 404"))
    done = drive(resource, live(*HEALTHY_TRAFFIC), offline_result=all_404)
    assert ended(done) == (Phase.INCONCLUSIVE, "EvaluationErrors")
    assert done.status.record[-1].evidence[0].n_errors == 2 * len(ITEMS)


def test_a_live_regression_after_a_passing_benchmark_is_rolled_back() -> None:
    resource = benchmarking(metrics=[ERROR_RATE])
    broken = live(ArmSamples(requests=900, errors=9), ArmSamples(requests=100, errors=30))
    done = drive(resource, broken, offline_result=better_offline(resource))
    assert ended(done) == (Phase.ROLLED_BACK, "CanaryWorse")
