"""Decision-quality simulator: thousands of simulated canaries with known truth.

It measures, on baton's own analysis functions (not re-implementations), how often the gates
promote a candidate that is not better, how much data they need, whether their intervals cover the
truth, and what clustered benchmark items do to a naive bootstrap. One command, seeded:

    python bench/decision_quality.py            # full run (a few minutes on 2 cores)
    python bench/decision_quality.py --quick    # smaller, for a smoke check

The scenarios and their parameters are spelled out in docs/statistics.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy import stats

from baton.analysis.offline import PairedTest, compare
from baton.analysis.online import ArmStats, MetricKind, SequentialState, SequentialTest, assess, update
from baton.api.decision import Verdict

ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    goal: str
    target: str
    measured: str
    met: bool | None


@dataclass(frozen=True)
class Scale:
    """How many simulated canaries each scenario runs."""

    canaries: int
    offline_trials: int
    coverage_trials: int
    cluster_trials: int
    bootstrap_resamples: int


FULL = Scale(
    canaries=1000, offline_trials=2000, coverage_trials=10000, cluster_trials=1000, bootstrap_resamples=1000
)
QUICK = Scale(
    canaries=200, offline_trials=300, coverage_trials=1000, cluster_trials=150, bootstrap_resamples=400
)

# Online canary scenario: structured-output validity of 90 %, minimum detectable effect 3 points.
BASE_RATE = 0.90
MDE = 0.03
BATCH = 50
# A cheaper quantization may cost at most 2 points of benchmark accuracy.
NI_MARGIN = 0.02


def fixed_horizon_n(base_rate: float, mde: float) -> int:
    """Per-arm sample size of a two-sided two-proportion z-test with 80 % power at the MDE."""
    z = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)
    return math.ceil(z**2 * 2 * base_rate * (1 - base_rate) / mde**2)


def online_test(n_fix: int) -> SequentialTest:
    return SequentialTest(
        metric="schema_valid",
        kind=MetricKind.PROPORTION,
        higher_is_better=True,
        mixture_sd=1.5 * MDE,
        alpha=ALPHA,
        min_samples=BATCH,
        max_samples=BATCH * math.floor(1.3 * n_fix / BATCH),
    )


@dataclass(frozen=True)
class CanaryRun:
    verdict: Verdict
    samples: int
    naive_promoted: bool
    naive_any_difference: bool
    covered_at_every_look: bool


def simulate_canary(
    rng: np.random.Generator, test: SequentialTest, p_champion: float, p_candidate: float
) -> CanaryRun:
    """One canary looked at after every batch, by the mSPRT and by a naive repeated z-test."""
    assert test.max_samples is not None
    looks = test.max_samples // BATCH
    champion_hits = rng.binomial(BATCH, p_champion, size=looks)
    candidate_hits = rng.binomial(BATCH, p_candidate, size=looks)
    n = BATCH * np.arange(1, looks + 1)
    pooled = (np.cumsum(champion_hits) + np.cumsum(candidate_hits)) / (2 * n)
    se = np.sqrt(np.maximum(pooled * (1 - pooled), 1e-12) * 2 / n)
    z = (np.cumsum(candidate_hits) - np.cumsum(champion_hits)) / n / se
    critical = stats.norm.ppf(1 - ALPHA / 2)
    state = SequentialState()
    covered = True
    truth = p_candidate - p_champion
    for look in range(looks):
        state = update(
            state,
            champion=ArmStats.proportion(BATCH, int(champion_hits[look])),
            candidate=ArmStats.proportion(BATCH, int(candidate_hits[look])),
        )
        outcome = assess(test, state)
        evidence = outcome.evidence[0]
        if evidence.ci_low is not None and not evidence.ci_low <= truth <= evidence.ci_high:
            covered = False
        if outcome.verdict != Verdict.CONTINUE:
            break
    return CanaryRun(
        verdict=outcome.verdict,
        samples=state.candidate.n,
        naive_promoted=bool(np.any(z > critical)),
        naive_any_difference=bool(np.any(np.abs(z) > critical)),
        covered_at_every_look=covered,
    )


def online_rows(rng: np.random.Generator, scale: Scale) -> list[Row]:
    n_fix = fixed_horizon_n(BASE_RATE, MDE)
    test = online_test(n_fix)
    null_runs = [simulate_canary(rng, test, BASE_RATE, BASE_RATE) for _ in range(scale.canaries)]
    false_promotion = np.mean([run.verdict == Verdict.PROMOTE for run in null_runs])
    naive_promotion = np.mean([run.naive_promoted for run in null_runs])
    naive_any = np.mean([run.naive_any_difference for run in null_runs])
    cs_coverage = np.mean([run.covered_at_every_look for run in null_runs])

    effect = 1.5 * MDE
    good_runs = [simulate_canary(rng, test, BASE_RATE, BASE_RATE + effect) for _ in range(scale.canaries)]
    samples = np.array([run.samples for run in good_runs])
    promoted = np.mean([run.verdict == Verdict.PROMOTE for run in good_runs])
    mde_runs = [simulate_canary(rng, test, BASE_RATE, BASE_RATE + MDE) for _ in range(scale.canaries)]
    mde_power = np.mean([run.verdict == Verdict.PROMOTE for run in mde_runs])
    looks = (test.max_samples or 0) // BATCH
    return [
        Row(
            f"A/A false promotion, mSPRT looked at after every batch of {BATCH} "
            f"({looks} looks, {scale.canaries} canaries)",
            "<= 5 %",
            f"{false_promotion:.1%}",
            bool(false_promotion <= 0.05),
        ),
        Row(
            "  same canaries, naive z-test repeated at every look: false promotion",
            "(for contrast)",
            f"{naive_promotion:.1%}",
            None,
        ),
        Row(
            "  same canaries, naive z-test repeated at every look: any 'significant' difference",
            "(for contrast)",
            f"{naive_any:.1%}",
            None,
        ),
        Row(
            f"median samples to decision at 1.5x MDE (fixed-horizon n = {n_fix} per arm)",
            "<= 50 % of n",
            f"{np.median(samples):.0f} ({np.median(samples) / n_fix:.0%})",
            bool(np.median(samples) <= 0.5 * n_fix),
        ),
        Row(
            "maximum samples to decision at 1.5x MDE",
            "<= 130 % of n",
            f"{samples.max()} ({samples.max() / n_fix:.0%})",
            bool(samples.max() <= 1.3 * n_fix),
        ),
        Row(
            "  promotions at 1.5x MDE / at 1x MDE (truncated at 1.3 n)",
            "(reported)",
            f"{promoted:.1%} / {mde_power:.1%}",
            None,
        ),
        Row(
            "anytime 95 % interval covers the truth at every look (A/A)",
            ">= 95 %",
            f"{cs_coverage:.1%}",
            bool(cs_coverage >= 0.95),
        ),
    ]


def paired_outcomes(
    rng: np.random.Generator, n: int, accuracy: float, effect: float, discordance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pass/fail of champion and candidate on the same n items, with a given share of items that disagree."""
    champion_only = (discordance - effect) / 2
    candidate_only = (discordance + effect) / 2
    both = accuracy - champion_only
    cells = rng.choice(
        4, size=n, p=[both, champion_only, candidate_only, 1 - both - champion_only - candidate_only]
    )
    champion = np.isin(cells, (0, 1)).astype(float)
    candidate = np.isin(cells, (0, 2)).astype(float)
    return champion, candidate


def offline_rows(rng: np.random.Generator, scale: Scale) -> list[Row]:
    rows = []
    for n, discordance in ((1000, 0.10), (1000, 0.15), (500, 0.10)):
        caught = 0
        for _ in range(scale.offline_trials):
            champion, candidate = paired_outcomes(rng, n, 0.70, -0.03, discordance)
            caught += compare(champion, candidate, alpha=ALPHA).candidate_significantly_worse
        power = caught / scale.offline_trials
        primary = n == 1000 and discordance == 0.10
        rows.append(
            Row(
                f"{'' if primary else '  '}power to flag a 3-point regression (70 % -> 67 %), exact McNemar, "
                f"{n} items, {discordance:.0%} of items disagree",
                ">= 80 %" if primary else "(reported)",
                f"{power:.1%}",
                bool(power >= 0.80) if primary else None,
            )
        )
    null_promotions = boundary_promotions = 0
    for _ in range(scale.offline_trials):
        champion, candidate = paired_outcomes(rng, 1000, 0.70, 0.0, 0.10)
        null_promotions += compare(champion, candidate, alpha=ALPHA).candidate_not_worse_than_margin
        champion, candidate = paired_outcomes(rng, 1000, 0.70, -NI_MARGIN, 0.10)
        boundary = compare(champion, candidate, alpha=ALPHA, margin=NI_MARGIN)
        boundary_promotions += boundary.candidate_not_worse_than_margin
    # Both promote only past a two-sided 95 % bound: 2.5 % nominal, exactly that at the margin boundary.
    allowed = 0.025 + 3 * math.sqrt(0.025 * 0.975 / scale.offline_trials)
    for label, promotions in (
        ("identical models (superiority, 1000 items)", null_promotions),
        (f"candidate worse by exactly the margin {NI_MARGIN} (non-inferiority)", boundary_promotions),
    ):
        rate = promotions / scale.offline_trials
        rows.append(
            Row(
                f"offline false promotion, {label}",
                f"2.5 % (<= {allowed:.1%} with MC error)",
                f"{rate:.1%}",
                rate <= allowed,
            )
        )
    covered = 0
    for _ in range(scale.coverage_trials):
        champion, candidate = paired_outcomes(rng, 1000, 0.70, 0.02, 0.15)
        result = compare(champion, candidate, alpha=ALPHA, test=PairedTest.PAIRED_T)
        covered += result.ci_low <= 0.02 <= result.ci_high
    coverage = covered / scale.coverage_trials
    rows.append(
        Row(
            f"95 % interval coverage, paired items ({scale.coverage_trials} trials, 1000 items)",
            "94-96 %",
            f"{coverage:.1%}",
            bool(0.94 <= coverage <= 0.96),
        )
    )
    return rows


def cluster_rows(rng: np.random.Generator, scale: Scale) -> list[Row]:
    """A/A on grouped items: 50 source documents x 8 items, within-cluster correlation 0.7."""
    n_clusters, cluster_size, icc = 50, 8, 0.7
    groups = [f"doc-{index // cluster_size}" for index in range(n_clusters * cluster_size)]
    robust_rejections = naive_rejections = robust_covered = 0
    for trial in range(scale.cluster_trials):
        shared = rng.normal(0, math.sqrt(icc), n_clusters).repeat(cluster_size)
        difference = shared + rng.normal(0, math.sqrt(1 - icc), n_clusters * cluster_size)
        champion = np.zeros_like(difference)
        robust = compare(champion, difference, groups=groups, alpha=ALPHA)
        naive = compare(
            champion,
            difference,
            alpha=ALPHA,
            test=PairedTest.PAIRED_BOOTSTRAP,
            n_resamples=scale.bootstrap_resamples,
            seed=trial,
        )
        robust_rejections += robust.p_value < ALPHA
        naive_rejections += naive.p_value < ALPHA
        robust_covered += robust.ci_low <= 0 <= robust.ci_high
    robust_rate = robust_rejections / scale.cluster_trials
    return [
        Row(
            f"clustered A/A (ICC {icc}, {n_clusters}x{cluster_size} items): "
            "false rejection, cluster-robust t",
            "<= 6 %",
            f"{robust_rate:.1%}",
            bool(robust_rate <= 0.06),
        ),
        Row(
            "  same data, naive item bootstrap: false rejection",
            "(for contrast)",
            f"{naive_rejections / scale.cluster_trials:.1%}",
            None,
        ),
        Row(
            "  cluster-robust 95 % interval coverage",
            "(reported)",
            f"{robust_covered / scale.cluster_trials:.1%}",
            None,
        ),
    ]


def run(scale: Scale, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    return online_rows(rng, scale) + offline_rows(rng, scale) + cluster_rows(rng, scale)


def format_table(rows: list[Row]) -> str:
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(f"| {row.goal} | {row.target} | {row.measured} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulated canaries (a smoke check)")
    parser.add_argument("--seed", type=int, default=20260529)
    args = parser.parse_args()
    started = time.monotonic()
    rows = run(QUICK if args.quick else FULL, args.seed)
    print(format_table(rows))
    print(f"\nseed {args.seed}, {time.monotonic() - started:.0f} s")
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
