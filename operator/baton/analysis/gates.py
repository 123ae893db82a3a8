"""From a deployment's `spec.analysis` and what was measured to one gate outcome, as pure functions.

The analysis core provides the tests (paired offline comparison, mSPRT, thresholds, sanity) and
the fail-closed combination (`baton.analysis.decision`); this module only says which test each
field of the spec asks for. Both shells call it, the operator and `baton up`, so a spec is judged
the same way wherever it runs. Nothing here does I/O: the shells measure, these functions judge.

An online metric is a guardrail: it rejects as soon as the anytime-valid test shows the candidate
worse, and passes only once each arm has `minSamples` valid samples in the window and the test
shows the candidate no worse than a small tolerance (nor its bound breached). Short of that it is
still collecting, which the step decision never takes for a pass. The offline benchmark is what
shows a candidate better; a guardrail only shows that it is not worse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import fmean

from baton.analysis.decision import decide
from baton.analysis.gain import Footprint, gain_gate
from baton.analysis.measurements import ArmReadings, BenchmarkResult, Measurement
from baton.analysis.offline import OfflinePolicy, offline_gate
from baton.analysis.online import (
    ArmStats,
    MetricKind,
    SequentialState,
    SequentialTest,
    assess,
)
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import SanityLimits, evaluation_failed, relative_gate, threshold_gate
from baton.api.candidate import BenchmarkScore
from baton.api.decision import Gate, Verdict
from baton.api.deployment import AnalysisSpec, MetricProvider, OnlineMetric
from baton.api.deployment import MetricKind as SpecMetricKind

# The effect each online test is tuned to detect fastest (the mSPRT mixture's standard deviation):
# two points of error rate, 50 ms of latency, five points of schema validity.
MIXTURE_SD = {SpecMetricKind.ERROR_RATE: 0.02, SpecMetricKind.LATENCY: 0.05, SpecMetricKind.VALIDITY: 0.05}
# Latency differs between versions for reasons that are not regressions (answer length, a busy
# laptop): the candidate is judged worse only when shown slower by more than this share (an
# in-process latency metric's default `tolerance`).
LATENCY_MARGIN_SHARE = 0.2
# How much worse than the champion a candidate may be shown to be at most, for a guardrail to pass:
# two points of error rate, five points of schema validity (latency: LATENCY_MARGIN_SHARE of the
# champion's mean). A candidate is rejected as soon as it is shown worse at all (latency: by more
# than that share), and passes only once shown within the tolerance, never for lack of evidence.
TOLERANCE = {SpecMetricKind.ERROR_RATE: 0.02, SpecMetricKind.VALIDITY: 0.05}


def offline_outcome(
    analysis: AnalysisSpec, results: Mapping[str, BenchmarkResult], footprint: Footprint | None = None
) -> GateOutcome:
    """Every benchmark of the spec through the paired offline gate; critical ones veto on their own.

    A non-critical benchmark's evidence is reported but its verdict never decides. With
    `requireGain` the gain gate (`baton.analysis.gain`) decides beside them on the same run: the
    candidate passes only if it is good enough and measurably cheaper, and both are in the evidence.
    """
    limits = SanityLimits(min_valid_samples=analysis.min_samples, max_error_rate=analysis.max_error_rate)
    critical: list[GateOutcome] = []
    advisory: list[GateOutcome] = []
    for reference in analysis.benchmarks:
        policy = OfflinePolicy(
            benchmark=reference.name, alpha=analysis.alpha, margin=analysis.margin or 0.0, limits=limits
        )
        outcome = offline_gate(results[reference.name].paired_scores(), policy)
        (critical if reference.critical else advisory).append(outcome)
    deciding = decide(critical or advisory)
    extra = tuple(evidence for outcome in advisory for evidence in outcome.evidence) if critical else ()
    quality = GateOutcome(
        deciding.verdict, deciding.gate, deciding.reason, deciding.message, (deciding.evidence + extra)[:16]
    )
    if analysis.require_gain is None:
        return quality
    gain = gain_gate(
        analysis.require_gain,
        footprint or Footprint(None, None),
        list(results.values()),
        alpha=analysis.alpha,
        min_samples=analysis.min_samples,
    )
    both = decide([quality, gain])
    if both.verdict != Verdict.PROMOTE:
        return both
    return GateOutcome(
        Verdict.PROMOTE,
        Gate.OFFLINE,
        quality.reason,
        f"{quality.message}; {gain.message}",
        (gain.evidence + quality.evidence)[:16],
    )


def benchmark_scores(results: Mapping[str, BenchmarkResult]) -> list[BenchmarkScore]:
    """Each arm's mean score on the items both answered, per benchmark: what a candidate's status shows."""
    scores = []
    for name, result in results.items():
        paired = result.paired_scores()
        both = len(paired.item_ids)
        scores.append(
            BenchmarkScore(
                benchmark=name,
                items=both,
                champion=round(fmean(paired.champion), 4) if both else None,
                candidate=round(fmean(paired.candidate), 4) if both else None,
            )
        )
    return scores


@dataclass(frozen=True)
class ArmSamples:
    """Live samples of one revision in the current canary window.

    `requests`/`errors` count answered and failed requests; `latency` summarises end-to-end
    seconds of the answered ones; `valid` counts schema-valid structured answers among `structured`.
    """

    requests: int = 0
    errors: int = 0
    latency: ArmStats = field(default_factory=ArmStats)
    structured: int = 0
    valid: int = 0


def online_outcome(
    analysis: AnalysisSpec,
    champion: ArmSamples,
    candidate: ArmSamples,
    external: Mapping[str, ArmReadings] | None = None,
) -> GateOutcome:
    """Each online metric of the spec judged on the window's samples; Continue while there is too little.

    `external` holds the readings of metrics answered by Prometheus (by metric name), one number
    per arm read at one instant: judged against `maxValue` and, with `tolerance`, against the
    champion's reading. A Prometheus metric without a reading is Inconclusive, never judged
    in-process instead: the spec names its provider.
    With no online metric configured there is nothing to judge live: the deployment's other gates
    (validation requires one, or `ungated: true`) decide.
    """
    outcomes = [
        _metric_outcome(analysis, metric, champion, candidate, (external or {}).get(metric.name))
        for metric in analysis.metrics
    ]
    if not outcomes:
        return GateOutcome(
            Verdict.PROMOTE,
            Gate.ONLINE,
            "NoOnlineMetrics",
            f"no online metric configured; the candidate answered {candidate.requests} requests",
        )
    return decide(outcomes)


def _metric_outcome(
    analysis: AnalysisSpec,
    metric: OnlineMetric,
    champion: ArmSamples,
    candidate: ArmSamples,
    reading: ArmReadings | None,
) -> GateOutcome:
    if metric.provider == MetricProvider.PROMETHEUS:
        return _prometheus_outcome(analysis, metric, reading)
    kind = SpecMetricKind(metric.kind)
    margin = 0.0
    if kind == SpecMetricKind.ERROR_RATE:
        arms = (
            ArmStats.proportion(champion.requests, champion.errors),
            ArmStats.proportion(candidate.requests, candidate.errors),
        )
        test_kind, higher_is_better = MetricKind.PROPORTION, False
    elif kind == SpecMetricKind.LATENCY:
        arms = (champion.latency, candidate.latency)
        test_kind, higher_is_better = MetricKind.MEAN, False
        share = LATENCY_MARGIN_SHARE if metric.tolerance is None else metric.tolerance
        margin = share * champion.latency.mean if champion.latency.n else 0.0
    else:
        arms = (
            ArmStats.proportion(champion.structured, champion.valid),
            ArmStats.proportion(candidate.structured, candidate.valid),
        )
        test_kind, higher_is_better = MetricKind.PROPORTION, True
    test = SequentialTest(
        metric=metric.name,
        kind=test_kind,
        higher_is_better=higher_is_better,
        mixture_sd=MIXTURE_SD[kind],
        alpha=analysis.alpha,
        margin=margin,
        min_samples=analysis.min_samples,
    )
    guardrail = _guardrail(test, arms[0], arms[1], higher_is_better, TOLERANCE.get(kind, margin))
    if metric.max_value is None or guardrail.verdict == Verdict.CONTINUE:
        return guardrail
    bound = threshold_gate(
        metric.name,
        Measurement(query=f"{metric.name} of the candidate", value=arms[1].mean),
        max_value=metric.max_value,
    )
    return decide([guardrail, bound])


def _prometheus_outcome(
    analysis: AnalysisSpec, metric: OnlineMetric, reading: ArmReadings | None
) -> GateOutcome:
    """The candidate's reading against `maxValue`, and against the champion's x (1 + `tolerance`)."""
    if reading is None:
        return evaluation_failed(metric.name, "no Prometheus reading was taken")
    outcomes = []
    if metric.max_value is not None:
        outcomes.append(
            threshold_gate(metric.name, reading.candidate, max_value=metric.max_value, alpha=analysis.alpha)
        )
    if metric.tolerance is not None:
        if reading.champion is None:
            return evaluation_failed(metric.name, "the champion was not read on the candidate's window")
        outcomes.append(
            relative_gate(
                metric.name,
                reading.champion,
                reading.candidate,
                tolerance=metric.tolerance,
                alpha=analysis.alpha,
            )
        )
    return decide(outcomes)


def _guardrail(
    test: SequentialTest, champion: ArmStats, candidate: ArmStats, higher_is_better: bool, tolerance: float
) -> GateOutcome:
    """Reject once the candidate is shown worse (by more than the test's margin); pass once each arm
    has `min_samples` and the candidate is shown no worse than `tolerance`; otherwise still collecting.

    Both arms without spread (every latency in one histogram bucket) leave the test without a
    variance: then the means are compared as they are.
    """
    sequential = assess(test, SequentialState(champion=champion, candidate=candidate, looks=1))
    if sequential.verdict == Verdict.REJECT or min(champion.n, candidate.n) < test.min_samples:
        return sequential
    evidence = sequential.evidence[0].model_copy(update={"margin": tolerance})
    n = f"{candidate.n} candidate and {champion.n} champion samples"
    if evidence.effect is None:
        raw = candidate.mean - champion.mean
        effect = raw if higher_is_better else -raw
        evidence = evidence.model_copy(update={"effect": effect})
        if effect < -test.margin:
            return GateOutcome(
                Verdict.REJECT,
                Gate.ONLINE,
                "CanaryWorse",
                f"{test.metric}: candidate worse without any spread in either arm ({n})",
                (evidence,),
            )
        shown = effect >= -tolerance
    else:
        assert evidence.ci_low is not None
        shown = evidence.ci_low > -tolerance
    interval = (
        f"effect {evidence.effect:.4g}"
        if evidence.ci_low is None
        else f"effect {evidence.effect:.4g}, anytime interval [{evidence.ci_low:.4g}, {evidence.ci_high:.4g}]"
    )
    if shown:
        return GateOutcome(
            Verdict.PROMOTE,
            Gate.ONLINE,
            "NoRegression",
            f"{test.metric}: shown at most {tolerance:.3g} worse than the champion on {n} ({interval})",
            (evidence,),
        )
    return GateOutcome(
        Verdict.CONTINUE,
        Gate.ONLINE,
        "CollectingSamples",
        f"{test.metric}: not yet shown within {tolerance:.3g} of the champion on {n} ({interval})",
        (evidence,),
    )
