"""Verdicts: turn gate results into one decision, failing closed.

The combination never averages: one rejecting metric rejects the candidate, and missing or broken
evidence anywhere makes the whole decision `Inconclusive`. Only a decision in which every gate
passed is `Promote`. This is the argo-rollouts `assessMetricStatus` idea, as a plain function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from baton.analysis.offline import PairedTest, compare
from baton.analysis.outcome import GateOutcome
from baton.analysis.providers import Measurement
from baton.analysis.sanity import SanityLimits, check_evaluation, check_measurement
from baton.api.decision import Evidence, Gate, Verdict

# Worst first: a Reject anywhere beats missing evidence, which beats waiting, which beats a pass.
_SEVERITY = (Verdict.REJECT, Verdict.INCONCLUSIVE, Verdict.CONTINUE, Verdict.PROMOTE)
_MAX_EVIDENCE = 16


def decide(outcomes: Sequence[GateOutcome]) -> GateOutcome:
    """The overall verdict: the most severe gate outcome, carrying the evidence of every gate."""
    if not outcomes:
        return GateOutcome(
            Verdict.INCONCLUSIVE,
            Gate.SANITY,
            "NoMetricsConfigured",
            "no gate was evaluated: nothing to decide on",
        )
    deciding = min(outcomes, key=lambda outcome: _SEVERITY.index(Verdict(outcome.verdict)))
    evidence = list(deciding.evidence)
    for outcome in outcomes:
        if outcome is not deciding:
            evidence.extend(outcome.evidence)
    return GateOutcome(
        deciding.verdict, deciding.gate, deciding.reason, deciding.message, tuple(evidence[:_MAX_EVIDENCE])
    )


@dataclass(frozen=True)
class PairedScores:
    """Per-item scores of both arms on the items that both answered, plus how many attempts failed."""

    item_ids: tuple[str, ...]
    champion: tuple[float, ...]
    candidate: tuple[float, ...]
    groups: tuple[str | None, ...]
    n_errors: int
    n_attempted: int


@dataclass(frozen=True)
class OfflinePolicy:
    """How the offline gate judges a benchmark: level, non-inferiority margin, test and sanity limits."""

    benchmark: str
    alpha: float = 0.05
    margin: float = 0.0
    test: PairedTest = PairedTest.AUTO
    limits: SanityLimits = field(default_factory=SanityLimits)
    bootstrap_resamples: int = 2000
    bootstrap_seed: int = 0


def offline_gate(scores: PairedScores, policy: OfflinePolicy) -> GateOutcome:
    """Sanity first, then the paired test: Promote if superior (or non-inferior), else Reject."""
    sanity = check_evaluation(
        policy.benchmark,
        n_champion=len(scores.champion),
        n_candidate=len(scores.candidate),
        n_errors=scores.n_errors,
        n_attempted=scores.n_attempted,
        limits=policy.limits,
        alpha=policy.alpha,
    )
    if sanity.verdict != Verdict.PROMOTE:
        return sanity
    result = compare(
        np.asarray(scores.champion),
        np.asarray(scores.candidate),
        groups=scores.groups,
        margin=policy.margin,
        alpha=policy.alpha,
        test=policy.test,
        n_resamples=policy.bootstrap_resamples,
        seed=policy.bootstrap_seed,
    )
    evidence = Evidence(
        test=str(result.test),
        metric=policy.benchmark,
        n_champion=result.n_pairs,
        n_candidate=result.n_pairs,
        n_errors=scores.n_errors,
        effect=result.effect,
        ci_low=result.ci_low,
        ci_high=result.ci_high,
        p_value=result.p_value,
        alpha=result.alpha,
        margin=result.margin,
    )
    summary = (
        f"effect {result.effect:+.4f} on {result.n_pairs} paired items "
        f"({result.n_clusters} clusters), "
        f"{1 - result.alpha:.0%} CI [{result.ci_low:+.4f}, {result.ci_high:+.4f}], "
        f"p = {result.p_value:.3g} ({result.test})"
    )
    if result.candidate_not_worse_than_margin:
        reason = "BenchmarkSuperior" if result.margin == 0 else "BenchmarkNonInferior"
        return GateOutcome(
            Verdict.PROMOTE, Gate.OFFLINE, reason, f"{policy.benchmark}: {summary}", (evidence,)
        )
    if result.candidate_significantly_worse:
        reason = "BenchmarkRegression"
    else:
        reason = "BenchmarkNotSuperior" if result.margin == 0 else "BenchmarkNotNonInferior"
    return GateOutcome(Verdict.REJECT, Gate.OFFLINE, reason, f"{policy.benchmark}: {summary}", (evidence,))


def threshold_gate(
    metric: str,
    measurement: Measurement,
    *,
    max_value: float | None = None,
    min_value: float | None = None,
    alpha: float = 0.05,
) -> GateOutcome:
    """An SLO check on one reading (e.g. candidate p99 latency <= 2 s); no data is never a pass."""
    if (max_value is None) == (min_value is None):
        raise ValueError(f"{metric}: set exactly one of max_value or min_value")
    missing = check_measurement(metric, measurement)
    if missing is not None:
        return missing
    value = measurement.value
    assert value is not None and not math.isnan(value)
    if max_value is not None:
        threshold, breached, bound = max_value, value > max_value, f"<= {max_value:g}"
    else:
        assert min_value is not None
        threshold, breached, bound = min_value, value < min_value, f">= {min_value:g}"
    evidence = Evidence(
        test="threshold", metric=metric, n_champion=0, n_candidate=1, alpha=alpha, threshold=threshold
    )
    if breached:
        return GateOutcome(
            Verdict.REJECT,
            Gate.ONLINE,
            "ThresholdBreached",
            f"{metric} = {value:g}, required {bound}",
            (evidence,),
        )
    return GateOutcome(
        Verdict.PROMOTE, Gate.ONLINE, "WithinThreshold", f"{metric} = {value:g} {bound}", (evidence,)
    )
