"""Sanity gates: refuse to judge a candidate on evidence that is missing or broken.

Other tools have reported success when every measurement errored, after a failed job, on a metric
with no data, and on a benchmark run that got 100 % HTTP 404s. Here each of those ends
`Inconclusive`, which never promotes: a gate only passes when there is enough valid data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from baton.analysis.measurements import Measurement
from baton.analysis.outcome import GateOutcome
from baton.api.decision import Evidence, Gate, Verdict

SANITY_TEST_NAME = "sanity"


@dataclass(frozen=True)
class SanityLimits:
    """Minimum valid samples per arm and the largest share of evaluation attempts allowed to fail."""

    min_valid_samples: int = 30
    max_error_rate: float = 0.05

    def __post_init__(self) -> None:
        if self.min_valid_samples < 1:
            raise ValueError(f"min_valid_samples must be >= 1, got {self.min_valid_samples}")
        if not 0 <= self.max_error_rate < 1:
            raise ValueError(f"max_error_rate must be in [0, 1), got {self.max_error_rate}")


def check_evaluation(
    metric: str,
    *,
    n_champion: int,
    n_candidate: int,
    n_errors: int,
    n_attempted: int,
    limits: SanityLimits,
    alpha: float,
) -> GateOutcome:
    """Pass (`Promote`) only if enough samples are valid and few evaluation attempts failed."""
    error_rate = n_errors / n_attempted if n_attempted else 1.0
    evidence = Evidence(
        test=SANITY_TEST_NAME,
        metric=metric,
        n_champion=n_champion,
        n_candidate=n_candidate,
        n_errors=n_errors,
        alpha=alpha,
        threshold=limits.max_error_rate,
    )

    def outcome(verdict: Verdict, reason: str, message: str) -> GateOutcome:
        return GateOutcome(verdict, Gate.SANITY, reason, message, (evidence,))

    if n_attempted == 0:
        return outcome(Verdict.INCONCLUSIVE, "NothingEvaluated", f"{metric}: no evaluation was attempted")
    if error_rate > limits.max_error_rate:
        return outcome(
            Verdict.INCONCLUSIVE,
            "EvaluationErrors",
            f"{metric}: {n_errors} of {n_attempted} evaluation attempts failed "
            f"({error_rate:.1%} > {limits.max_error_rate:.1%} allowed)",
        )
    if min(n_champion, n_candidate) < limits.min_valid_samples:
        return outcome(
            Verdict.INCONCLUSIVE,
            "TooFewSamples",
            f"{metric}: {min(n_champion, n_candidate)} valid samples, "
            f"{limits.min_valid_samples} needed per arm",
        )
    return outcome(
        Verdict.PROMOTE, "SanityPassed", f"{metric}: {n_candidate} valid samples, {error_rate:.1%} errors"
    )


def evaluation_failed(metric: str, message: str) -> GateOutcome:
    """The evaluation itself failed (a job crashed, a provider was offline): never a pass."""
    return GateOutcome(Verdict.INCONCLUSIVE, Gate.SANITY, "EvaluationFailed", f"{metric}: {message}")


def check_measurement(metric: str, measurement: Measurement) -> GateOutcome | None:
    """`Inconclusive` if a measurement failed or returned no data (never a pass), else None."""
    if measurement.error is not None:
        return GateOutcome(
            Verdict.INCONCLUSIVE, Gate.SANITY, "MeasurementFailed", f"{metric}: {measurement.error}"
        )
    if measurement.value is None or math.isnan(measurement.value):
        return GateOutcome(
            Verdict.INCONCLUSIVE,
            Gate.SANITY,
            "NoData",
            f"{metric}: query returned no data: {measurement.query}",
        )
    return None


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


def relative_gate(
    metric: str, champion: Measurement, candidate: Measurement, *, tolerance: float, alpha: float = 0.05
) -> GateOutcome:
    """Candidate <= champion x (1 + tolerance), both read on one window; a missing arm never passes."""
    for arm, reading in (("candidate", candidate), ("champion", champion)):
        missing = check_measurement(f"{metric} ({arm})", reading)
        if missing is not None:
            return missing
    assert champion.value is not None and candidate.value is not None
    bound = champion.value * (1 + tolerance)
    evidence = Evidence(
        test="relative-threshold",
        metric=metric,
        n_champion=1,
        n_candidate=1,
        alpha=alpha,
        margin=tolerance,
        threshold=bound,
        value=candidate.value,
    )
    breached = candidate.value > bound
    return GateOutcome(
        Verdict.REJECT if breached else Verdict.PROMOTE,
        Gate.ONLINE,
        "RelativeBoundBreached" if breached else "WithinRelativeBound",
        f"{metric} = {candidate.value:g}, champion {champion.value:g}, required <= {bound:g} "
        f"(champion x (1 + {tolerance:g}))",
        (evidence,),
    )
