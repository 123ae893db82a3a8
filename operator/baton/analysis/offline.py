"""Offline gate: a paired comparison of champion and candidate on the same benchmark items.

Both revisions answer identical items, so each item's score difference removes the item's own
difficulty from the comparison; that pairing is what lets ~1,000 items detect a few points of
accuracy. Items that share a source (`BenchmarkItem.group`) are correlated, and treating them as
independent makes intervals far too narrow, so grouped items get cluster-robust standard errors.

Every function here is pure: arrays in, a frozen result out. The bootstrap is seeded by the caller.
`offline_gate` puts the sanity checks in front of the test and turns its result into a gate outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from scipy import stats

from baton.analysis.measurements import PairedScores
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import SanityLimits, check_evaluation
from baton.api.decision import Evidence, Gate, Verdict


class PairedTest(StrEnum):
    """The paired tests the offline gate can run. `auto` picks the right one from the data."""

    AUTO = "auto"
    MCNEMAR_EXACT = "mcnemar-exact"
    PAIRED_T = "paired-t"
    WILCOXON = "wilcoxon"
    PAIRED_BOOTSTRAP = "paired-bootstrap"
    CLUSTER_ROBUST_T = "cluster-robust-t"


@dataclass(frozen=True)
class PairedComparison:
    """Effect of the candidate over the champion (positive = candidate better) on paired items.

    `p_value` is two-sided, for the null hypothesis "effect = -margin" (margin 0: no difference).
    `ci_low`/`ci_high` bound the effect at confidence 1 - alpha. For the exact McNemar and Wilcoxon
    tests the p-value decides and the interval is the paired-t interval, reported for scale.
    """

    test: PairedTest
    n_pairs: int
    n_clusters: int
    effect: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float
    margin: float

    @property
    def candidate_not_worse_than_margin(self) -> bool:
        """Superiority (margin 0) or non-inferiority (margin > 0) is shown at level alpha."""
        return self.p_value < self.alpha and self.effect > -self.margin

    @property
    def candidate_significantly_worse(self) -> bool:
        """The candidate is significantly worse than the champion (a regression), at level alpha."""
        if self.margin == 0:
            return self.p_value < self.alpha and self.effect < 0
        return self.ci_high < 0


def compare(
    champion: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    *,
    groups: Sequence[str | None] | None = None,
    margin: float = 0.0,
    alpha: float = 0.05,
    test: PairedTest = PairedTest.AUTO,
    n_resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Compare per-item scores; `champion[i]` and `candidate[i]` are the scores of the same item.

    `groups[i]` is the item's cluster (None = a cluster of its own). `margin` >= 0 turns the
    superiority question into non-inferiority: "is the candidate worse by less than margin?".
    """
    champ = np.asarray(champion, dtype=float)
    cand = np.asarray(candidate, dtype=float)
    if champ.shape != cand.shape or champ.ndim != 1:
        raise ValueError(
            f"champion and candidate scores must be 1-D and equal length, got {champ.shape} and {cand.shape}"
        )
    if champ.size < 2:
        raise ValueError(f"need at least 2 paired items, got {champ.size}")
    if not (np.all(np.isfinite(champ)) and np.all(np.isfinite(cand))):
        raise ValueError("scores must be finite numbers; drop failed items before comparing")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cluster_ids = _cluster_ids(groups, champ.size)
    clustered = cluster_ids is not None and np.unique(cluster_ids).size < champ.size
    binary = bool(np.all(np.isin(champ, (0.0, 1.0))) and np.all(np.isin(cand, (0.0, 1.0))))
    if test == PairedTest.AUTO:
        if clustered:
            test = PairedTest.CLUSTER_ROBUST_T
        elif binary and margin == 0:
            test = PairedTest.MCNEMAR_EXACT
        else:
            test = PairedTest.PAIRED_T
    if test == PairedTest.MCNEMAR_EXACT and not (binary and margin == 0):
        raise ValueError(
            "mcnemar-exact needs pass/fail (0/1) scores and margin 0; use paired-t or paired-bootstrap"
        )
    if test == PairedTest.CLUSTER_ROBUST_T and cluster_ids is None:
        raise ValueError("cluster-robust-t needs groups")

    diff = cand - champ
    effect = float(diff.mean())
    if test == PairedTest.CLUSTER_ROBUST_T:
        assert cluster_ids is not None
        return _cluster_robust_t(diff, cluster_ids, margin, alpha)
    if test == PairedTest.PAIRED_BOOTSTRAP:
        return _bootstrap(diff, cluster_ids if clustered else None, margin, alpha, n_resamples, seed)
    t_result = _paired_t(diff, margin, alpha)
    if test == PairedTest.PAIRED_T:
        return t_result
    if test == PairedTest.MCNEMAR_EXACT:
        candidate_only = int(np.sum((cand == 1) & (champ == 0)))
        champion_only = int(np.sum((cand == 0) & (champ == 1)))
        discordant = candidate_only + champion_only
        p_value = 1.0 if discordant == 0 else float(stats.binomtest(candidate_only, discordant, 0.5).pvalue)
    else:
        shifted = diff + margin
        p_value = 1.0 if np.all(shifted == 0) else float(stats.wilcoxon(shifted, zero_method="pratt").pvalue)
    return PairedComparison(
        test=test,
        n_pairs=diff.size,
        n_clusters=diff.size,
        effect=effect,
        ci_low=t_result.ci_low,
        ci_high=t_result.ci_high,
        p_value=min(1.0, p_value),
        alpha=alpha,
        margin=margin,
    )


def _cluster_ids(groups: Sequence[str | None] | None, n: int) -> np.ndarray | None:
    """Integer cluster ids; an item without a group is a cluster of its own."""
    if groups is None:
        return None
    if len(groups) != n:
        raise ValueError(f"groups must have one entry per item ({n}), got {len(groups)}")
    if all(group is None for group in groups):
        return None
    labels = [f"g:{group}" if group is not None else f"item:{index}" for index, group in enumerate(groups)]
    return np.unique(np.asarray(labels), return_inverse=True)[1]


def _t_result(
    test: PairedTest, diff: np.ndarray, se: float, df: int, n_clusters: int, margin: float, alpha: float
) -> PairedComparison:
    effect = float(diff.mean())
    half_width = float(stats.t.ppf(1 - alpha / 2, df)) * se
    distance = effect + margin
    # With every difference identical (se 0) the data leave no doubt either way.
    p_value = float(2 * stats.t.sf(abs(distance) / se, df)) if se > 0 else float(distance == 0)
    return PairedComparison(
        test=test,
        n_pairs=diff.size,
        n_clusters=n_clusters,
        effect=effect,
        ci_low=effect - half_width,
        ci_high=effect + half_width,
        p_value=p_value,
        alpha=alpha,
        margin=margin,
    )


def _paired_t(diff: np.ndarray, margin: float, alpha: float) -> PairedComparison:
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    return _t_result(PairedTest.PAIRED_T, diff, se, diff.size - 1, diff.size, margin, alpha)


def _cluster_robust_t(
    diff: np.ndarray, cluster_ids: np.ndarray, margin: float, alpha: float
) -> PairedComparison:
    """Liang-Zeger (CR1) standard error of the mean difference, with G - 1 degrees of freedom."""
    n_clusters = int(cluster_ids.max()) + 1
    if n_clusters < 2:
        raise ValueError("cluster-robust-t needs at least 2 clusters")
    residual_sums = np.bincount(cluster_ids, weights=diff - diff.mean(), minlength=n_clusters)
    variance = n_clusters / (n_clusters - 1) * float(np.sum(residual_sums**2)) / diff.size**2
    return _t_result(
        PairedTest.CLUSTER_ROBUST_T, diff, float(np.sqrt(variance)), n_clusters - 1, n_clusters, margin, alpha
    )


def _bootstrap(
    diff: np.ndarray, cluster_ids: np.ndarray | None, margin: float, alpha: float, n_resamples: int, seed: int
) -> PairedComparison:
    """Percentile bootstrap of the mean difference; resamples whole clusters when items are grouped."""
    rng = np.random.default_rng(seed)
    if cluster_ids is None:
        cluster_sums, cluster_sizes = diff, np.ones_like(diff)
    else:
        cluster_sums = np.bincount(cluster_ids, weights=diff)
        cluster_sizes = np.bincount(cluster_ids).astype(float)
    n_units = cluster_sums.size
    draws = rng.integers(0, n_units, size=(n_resamples, n_units))
    resampled = cluster_sums[draws].sum(axis=1) / cluster_sizes[draws].sum(axis=1)
    ci_low, ci_high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    below = (np.sum(resampled <= -margin) + 1) / (n_resamples + 1)
    above = (np.sum(resampled >= -margin) + 1) / (n_resamples + 1)
    return PairedComparison(
        test=PairedTest.PAIRED_BOOTSTRAP,
        n_pairs=diff.size,
        n_clusters=n_units,
        effect=float(diff.mean()),
        ci_low=float(ci_low),
        ci_high=float(ci_high),
        p_value=float(min(1.0, 2 * min(below, above))),
        alpha=alpha,
        margin=margin,
    )


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
