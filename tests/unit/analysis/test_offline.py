"""The offline paired tests: known values, the right test chosen, and error rates with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from baton.analysis.offline import PairedTest, compare

pytestmark = pytest.mark.unit


def test_exact_mcnemar_matches_the_binomial_on_discordant_pairs() -> None:
    # 10 items only the candidate gets right, 1 only the champion: exact p = 2 * P(X <= 1 | 11, 1/2).
    champion = [0] * 10 + [1] + [1] * 20 + [0] * 9
    candidate = [1] * 10 + [0] + [1] * 20 + [0] * 9
    result = compare(champion, candidate)
    assert result.test == PairedTest.MCNEMAR_EXACT
    assert result.p_value == pytest.approx(2 * stats.binom.cdf(1, 11, 0.5))
    assert result.effect == pytest.approx(9 / 40)
    assert result.candidate_not_worse_than_margin
    assert not result.candidate_significantly_worse


def test_paired_t_matches_scipy_and_interval_contains_effect() -> None:
    rng = np.random.default_rng(1)
    champion = rng.uniform(0, 1, 80)
    candidate = np.clip(champion + rng.normal(0.05, 0.1, 80), 0, 1)
    result = compare(champion, candidate)
    assert result.test == PairedTest.PAIRED_T
    assert result.p_value == pytest.approx(stats.ttest_rel(candidate, champion).pvalue)
    assert result.ci_low < result.effect < result.ci_high


def test_non_inferiority_shifts_the_null_by_the_margin() -> None:
    rng = np.random.default_rng(2)
    champion = rng.binomial(1, 0.7, 1500).astype(float)
    flip = rng.random(1500) < 0.04  # a cheaper quantization: 4 % of answers flip, in both directions
    candidate = np.where(flip, 1 - champion, champion)
    superiority = compare(champion, candidate)
    non_inferiority = compare(champion, candidate, margin=0.03)
    assert not superiority.candidate_not_worse_than_margin
    assert non_inferiority.test == PairedTest.PAIRED_T  # McNemar cannot test a margin
    assert non_inferiority.candidate_not_worse_than_margin
    assert non_inferiority.ci_low > -0.03


def test_clear_regression_is_flagged() -> None:
    champion = np.ones(200)
    candidate = np.r_[np.zeros(30), np.ones(170)]
    result = compare(champion, candidate)
    assert result.candidate_significantly_worse
    assert not result.candidate_not_worse_than_margin


def test_groups_switch_to_cluster_robust_and_widen_the_interval() -> None:
    rng = np.random.default_rng(3)
    shared = rng.normal(0, 1, 20).repeat(10)
    difference = shared + rng.normal(0, 0.3, 200)
    groups = [f"doc{index // 10}" for index in range(200)]
    naive = compare(np.zeros(200), difference, test=PairedTest.PAIRED_T)
    robust = compare(np.zeros(200), difference, groups=groups)
    assert robust.test == PairedTest.CLUSTER_ROBUST_T
    assert robust.n_clusters == 20
    assert robust.ci_high - robust.ci_low > 2.5 * (naive.ci_high - naive.ci_low)


def test_items_without_group_are_their_own_clusters() -> None:
    groups = [None] * 5 + ["a"] * 5
    result = compare(np.zeros(10), np.linspace(-1, 1, 10), groups=groups)
    assert result.test == PairedTest.CLUSTER_ROBUST_T
    assert result.n_clusters == 6


def test_cluster_bootstrap_is_seeded_and_resamples_clusters() -> None:
    rng = np.random.default_rng(4)
    difference = rng.normal(0, 1, 30).repeat(5) + rng.normal(0, 0.2, 150)
    groups = [f"g{index // 5}" for index in range(150)]
    first = compare(np.zeros(150), difference, groups=groups, test=PairedTest.PAIRED_BOOTSTRAP, seed=7)
    second = compare(np.zeros(150), difference, groups=groups, test=PairedTest.PAIRED_BOOTSTRAP, seed=7)
    assert first == second
    assert first.n_clusters == 30


def test_wilcoxon_decides_by_signed_ranks() -> None:
    rng = np.random.default_rng(5)
    champion = rng.uniform(0, 1, 60)
    candidate = champion + rng.exponential(0.05, 60)
    result = compare(champion, candidate, test=PairedTest.WILCOXON)
    assert result.p_value == pytest.approx(stats.wilcoxon(candidate - champion, zero_method="pratt").pvalue)
    assert result.candidate_not_worse_than_margin


def test_identical_answers_are_not_superior_but_are_non_inferior() -> None:
    scores = np.r_[np.ones(50), np.zeros(50)]
    assert compare(scores, scores).p_value == 1.0
    assert not compare(scores, scores).candidate_not_worse_than_margin
    assert compare(scores, scores, margin=0.02).candidate_not_worse_than_margin


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"champion": [1, 0], "candidate": [1]}, "equal length"),
        ({"champion": [1], "candidate": [1]}, "at least 2"),
        ({"champion": [1, np.nan], "candidate": [1, 0]}, "finite"),
        ({"champion": [0.5, 0.2], "candidate": [1, 0], "test": PairedTest.MCNEMAR_EXACT}, "pass/fail"),
        ({"champion": [1, 0], "candidate": [1, 0], "margin": -0.1}, "margin"),
        ({"champion": [1, 0], "candidate": [1, 0], "groups": ["a"]}, "one entry per item"),
    ],
)
def test_bad_input_is_refused_with_the_reason(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare(**kwargs)


def test_false_positive_rate_is_near_alpha_on_null_data() -> None:
    rng = np.random.default_rng(6)
    rejections = 0
    for _ in range(600):
        champion = rng.binomial(1, 0.7, 400).astype(float)
        flip = rng.random(400) < 0.15
        candidate = np.where(flip, rng.binomial(1, 0.7, 400), champion)
        rejections += compare(champion, candidate).p_value < 0.05
    assert 0.015 <= rejections / 600 <= 0.08
