"""Online gate: an anytime-valid sequential test on live canary metrics.

A canary is looked at after every batch of traffic. Re-running a fixed-sample test at every look
inflates a 5 % false-positive rate to 14-41 %; this module uses a mixture sequential probability
ratio test (mSPRT, normal mixture; Johari et al. 2017, Howard et al. 2021) instead. Its confidence
sequence holds at every look simultaneously, so the canary can stop as soon as the evidence is
clear, and may be looked at as often as the shell likes.

State is a frozen value: `update(state, champion=..., candidate=...)` returns a new one, and
`assess(test, state)` is a pure function of both, so a shell that crashes can resume from the
counts it wrote to status.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from baton.analysis.outcome import GateOutcome
from baton.api.decision import Evidence, Gate, Verdict

MSPRT_TEST_NAME = "msprt-normal-mixture"
_E_VALUE_CAP = 1e12


class MetricKind(StrEnum):
    """`proportion`: each sample is 0 or 1 (error, schema-valid); `mean`: any number (latency in seconds)."""

    PROPORTION = "proportion"
    MEAN = "mean"


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one arm: sample count, sum and sum of squares."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def proportion(cls, n: int, successes: float) -> ArmStats:
        """A batch of `n` yes/no samples, `successes` of them yes (0/1 data: sum = sum of squares)."""
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
        return cls(n=n, total=float(successes), total_sq=float(successes))

    @classmethod
    def from_values(cls, values: Iterable[float]) -> ArmStats:
        listed = [float(value) for value in values]
        return cls(
            n=len(listed), total=math.fsum(listed), total_sq=math.fsum(value * value for value in listed)
        )

    @classmethod
    def from_histogram(cls, cumulative: Mapping[float, float]) -> ArmStats:
        """The observations of a histogram (upper bound -> cumulative count): see `histogram_points`."""
        points = histogram_points(cumulative)
        return cls(
            n=sum(count for _, count in points),
            total=math.fsum(value * count for value, count in points),
            total_sq=math.fsum(value * value * count for value, count in points),
        )

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    def variance(self, kind: MetricKind) -> float:
        """Per-sample variance; proportions use (k+1)/(n+2) so an arm with no errors is not certain."""
        if kind == MetricKind.PROPORTION:
            smoothed = (self.total + 1) / (self.n + 2)
            return smoothed * (1 - smoothed)
        if self.n < 2:
            return math.nan
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))


def counter_increase(now: float, before: float) -> float:
    """How much a Prometheus counter grew between two reads; one that went down was reset (a
    replica restarted), so all of its value is new."""
    return now - before if now >= before else now


def histogram_points(cumulative: Mapping[float, float]) -> list[tuple[float, int]]:
    """(value, count) of each bucket of a histogram given as upper bound -> cumulative count.

    A histogram keeps bucket counts, not single values: each observation is taken at its bucket's
    midpoint (the +Inf bucket's at its lower bound), which keeps the spread the sequential test
    needs where a mean per scrape would hide it.
    """
    points = []
    lower, below = 0.0, 0.0
    for bound in sorted(cumulative):
        count = round(cumulative[bound] - below)
        below = cumulative[bound]
        if count > 0:
            points.append((lower if math.isinf(bound) else (lower + bound) / 2, count))
        lower = lower if math.isinf(bound) else bound
    return points


@dataclass(frozen=True)
class SequentialTest:
    """Configuration of one online metric's test (candidate vs champion).

    `mixture_sd` is the effect size, in the metric's own units, that the test is tuned to detect
    fastest (the standard deviation of the normal mixing distribution); a value near the effect you
    expect is best, and being off by 2x in either direction costs little. Effects are oriented so
    that positive always means "candidate better", whatever `higher_is_better` says.
    """

    metric: str
    kind: MetricKind
    higher_is_better: bool
    mixture_sd: float
    alpha: float = 0.05
    margin: float = 0.0
    min_samples: int = 100
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"{self.metric}: alpha must be in (0, 1), got {self.alpha}")
        if self.mixture_sd <= 0:
            raise ValueError(f"{self.metric}: mixture_sd must be > 0, got {self.mixture_sd}")
        if self.margin < 0:
            raise ValueError(f"{self.metric}: margin must be >= 0, got {self.margin}")
        if self.max_samples is not None and self.max_samples < self.min_samples:
            raise ValueError(
                f"{self.metric}: max_samples ({self.max_samples}) < min_samples ({self.min_samples})"
            )


@dataclass(frozen=True)
class SequentialState:
    """Everything the test needs to remember: cumulative arm statistics and the number of looks."""

    champion: ArmStats = ArmStats()
    candidate: ArmStats = ArmStats()
    looks: int = 0


def update(state: SequentialState, *, champion: ArmStats, candidate: ArmStats) -> SequentialState:
    """Add one batch of new samples (not cumulative totals) from each arm."""
    return replace(
        state,
        champion=state.champion + champion,
        candidate=state.candidate + candidate,
        looks=state.looks + 1,
    )


@dataclass(frozen=True)
class ConfidenceSequence:
    """Anytime-valid interval of the effect and the mSPRT e-value against "effect = -margin"."""

    effect: float
    ci_low: float
    ci_high: float
    e_value: float


def confidence_sequence(test: SequentialTest, state: SequentialState) -> ConfidenceSequence | None:
    """The normal-mixture confidence sequence at the current look; None while the variance is unknown."""
    champion, candidate = state.champion, state.candidate
    if champion.n < 2 or candidate.n < 2:
        return None
    variance = candidate.variance(test.kind) / candidate.n + champion.variance(test.kind) / champion.n
    if not variance > 0:
        return None
    raw = candidate.mean - champion.mean
    effect = raw if test.higher_is_better else -raw
    tau_sq = test.mixture_sd**2
    log_ratio = math.log((variance + tau_sq) / variance)
    half_width = math.sqrt(
        variance * (variance + tau_sq) / tau_sq * (2 * math.log(1 / test.alpha) + log_ratio)
    )
    log_e = -0.5 * log_ratio + tau_sq * (effect + test.margin) ** 2 / (2 * variance * (variance + tau_sq))
    e_value = _E_VALUE_CAP if log_e > math.log(_E_VALUE_CAP) else math.exp(log_e)
    return ConfidenceSequence(
        effect=effect, ci_low=effect - half_width, ci_high=effect + half_width, e_value=e_value
    )


def assess(test: SequentialTest, state: SequentialState) -> GateOutcome:
    """Promote, Reject or Continue the canary on this metric; Inconclusive only at a starved horizon."""
    n_champion, n_candidate = state.champion.n, state.candidate.n
    at_horizon = test.max_samples is not None and min(n_champion, n_candidate) >= test.max_samples
    sequence = confidence_sequence(test, state)

    def outcome(verdict: Verdict, reason: str, message: str) -> GateOutcome:
        evidence = Evidence(
            test=MSPRT_TEST_NAME,
            metric=test.metric,
            n_champion=n_champion,
            n_candidate=n_candidate,
            effect=sequence.effect if sequence else None,
            ci_low=sequence.ci_low if sequence else None,
            ci_high=sequence.ci_high if sequence else None,
            e_value=sequence.e_value if sequence else None,
            alpha=test.alpha,
            margin=test.margin,
        )
        return GateOutcome(verdict, Gate.ONLINE, reason, message, (evidence,))

    if min(n_champion, n_candidate) < test.min_samples or sequence is None:
        if at_horizon:
            return outcome(
                Verdict.INCONCLUSIVE,
                "TooFewSamples",
                f"{test.metric}: horizon reached without {test.min_samples} usable samples per arm",
            )
        return outcome(
            Verdict.CONTINUE, "CollectingSamples", f"{test.metric}: {n_candidate} candidate samples so far"
        )
    shown = "better than" if test.margin == 0 else f"within {test.margin:g} of"
    interval = (
        f"effect {sequence.effect:.4g}, anytime interval [{sequence.ci_low:.4g}, {sequence.ci_high:.4g}]"
    )
    if sequence.ci_low > -test.margin:
        return outcome(
            Verdict.PROMOTE,
            "CanarySuperior" if test.margin == 0 else "CanaryNonInferior",
            f"{test.metric}: candidate shown {shown} the champion ({interval})",
        )
    if sequence.ci_high < -test.margin:
        return outcome(
            Verdict.REJECT,
            "CanaryWorse" if test.margin == 0 else "CanaryInferior",
            f"{test.metric}: candidate shown worse than the champion"
            f"{'' if test.margin == 0 else f' by more than {test.margin:g}'} ({interval})",
        )
    if at_horizon:
        return outcome(
            Verdict.REJECT,
            "NotShownBetterAtHorizon",
            f"{test.metric}: after {n_candidate} candidate samples it is not shown {shown} the champion",
        )
    return outcome(
        Verdict.CONTINUE, "CollectingSamples", f"{test.metric}: not decided yet after {state.looks} looks"
    )
