"""The anytime-valid sequential test: its interval, its decisions, and its error rate under peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from baton.analysis.online import (
    ArmStats,
    MetricKind,
    SequentialState,
    SequentialTest,
    assess,
    confidence_sequence,
    update,
)
from baton.api.decision import Gate, Verdict

pytestmark = pytest.mark.unit

VALIDITY = SequentialTest(
    metric="schema_valid", kind=MetricKind.PROPORTION, higher_is_better=True, mixture_sd=0.05, min_samples=50
)


def test_update_accumulates_batches_and_counts_looks() -> None:
    state = update(
        SequentialState(), champion=ArmStats.proportion(10, 9), candidate=ArmStats.proportion(10, 8)
    )
    state = update(state, champion=ArmStats.proportion(5, 5), candidate=ArmStats.from_values([1, 0, 1]))
    assert state.champion == ArmStats(15, 14.0, 14.0)
    assert state.candidate == ArmStats(13, 10.0, 10.0)
    assert state.looks == 2


def test_confidence_sequence_matches_the_normal_mixture_formula() -> None:
    state = SequentialState(champion=ArmStats.proportion(400, 360), candidate=ArmStats.proportion(400, 380))
    sequence = confidence_sequence(VALIDITY, state)
    assert sequence is not None
    p_champion, p_candidate = 361 / 402, 381 / 402
    variance = p_candidate * (1 - p_candidate) / 400 + p_champion * (1 - p_champion) / 400
    tau_sq = 0.05**2
    half = math.sqrt(
        variance
        * (variance + tau_sq)
        / tau_sq
        * (2 * math.log(20) + math.log((variance + tau_sq) / variance))
    )
    assert sequence.effect == pytest.approx(0.05)
    assert sequence.ci_low == pytest.approx(0.05 - half)
    # The e-value crosses 1/alpha exactly when the interval leaves the null.
    assert (sequence.e_value >= 20) == (sequence.ci_low > 0)


def test_waits_for_min_samples() -> None:
    state = SequentialState(champion=ArmStats.proportion(20, 10), candidate=ArmStats.proportion(20, 20))
    outcome = assess(VALIDITY, state)
    assert outcome.verdict == Verdict.CONTINUE
    assert outcome.gate == Gate.ONLINE


def test_clear_improvement_promotes_and_clear_harm_rejects() -> None:
    better = SequentialState(
        champion=ArmStats.proportion(1000, 800), candidate=ArmStats.proportion(1000, 950)
    )
    worse = SequentialState(champion=ArmStats.proportion(1000, 950), candidate=ArmStats.proportion(1000, 800))
    assert assess(VALIDITY, better).verdict == Verdict.PROMOTE
    rejected = assess(VALIDITY, worse)
    assert rejected.verdict == Verdict.REJECT
    assert rejected.reason == "CanaryWorse"
    evidence = rejected.evidence[0]
    assert evidence.test == "msprt-normal-mixture"
    assert evidence.n_candidate == 1000
    assert evidence.ci_high < 0


def test_lower_is_better_metrics_are_oriented_so_positive_means_candidate_better() -> None:
    errors = SequentialTest(
        metric="error_rate", kind=MetricKind.PROPORTION, higher_is_better=False, mixture_sd=0.02, margin=0.01
    )
    # Candidate errs on 0 of 2000 requests, champion on 10: non-inferior within one point.
    state = SequentialState(champion=ArmStats.proportion(2000, 10), candidate=ArmStats.proportion(2000, 0))
    outcome = assess(errors, state)
    assert outcome.verdict == Verdict.PROMOTE
    assert outcome.reason == "CanaryNonInferior"
    assert outcome.evidence[0].effect == pytest.approx(10 / 2000)


def test_no_errors_in_a_small_canary_is_not_certainty() -> None:
    errors = SequentialTest(
        metric="error_rate",
        kind=MetricKind.PROPORTION,
        higher_is_better=False,
        mixture_sd=0.02,
        margin=0.01,
        min_samples=10,
    )
    state = SequentialState(champion=ArmStats.proportion(30, 0), candidate=ArmStats.proportion(30, 0))
    assert assess(errors, state).verdict == Verdict.CONTINUE


def test_horizon_without_a_decision_rejects_and_starved_horizon_is_inconclusive() -> None:
    bounded = SequentialTest(
        metric="latency_s", kind=MetricKind.MEAN, higher_is_better=False, mixture_sd=0.05, max_samples=200
    )
    rng = np.random.default_rng(0)
    same = SequentialState(
        champion=ArmStats.from_values(rng.normal(1, 0.2, 200)),
        candidate=ArmStats.from_values(rng.normal(1, 0.2, 200)),
    )
    outcome = assess(bounded, same)
    assert outcome.verdict == Verdict.REJECT
    assert outcome.reason == "NotShownBetterAtHorizon"
    starved = SequentialState(
        champion=ArmStats.from_values([1.0] * 300), candidate=ArmStats.from_values([1.0] * 300)
    )
    assert assess(bounded, starved).verdict == Verdict.INCONCLUSIVE  # zero variance: nothing to test on


@pytest.mark.parametrize(
    "kwargs",
    [{"alpha": 1.5}, {"mixture_sd": 0.0}, {"margin": -1.0}, {"min_samples": 100, "max_samples": 10}],
)
def test_bad_configuration_is_refused_naming_the_metric(kwargs: dict) -> None:
    options = {"metric": "m", "kind": MetricKind.MEAN, "higher_is_better": True, "mixture_sd": 0.1} | kwargs
    with pytest.raises(ValueError, match=r"^m: "):
        SequentialTest(**options)


def test_peeking_after_every_batch_keeps_false_promotions_under_alpha() -> None:
    rng = np.random.default_rng(11)
    test = SequentialTest(
        metric="schema_valid",
        kind=MetricKind.PROPORTION,
        higher_is_better=True,
        mixture_sd=0.045,
        min_samples=50,
        max_samples=2000,
    )
    promoted = 0
    for _ in range(300):
        state = SequentialState()
        for _ in range(40):
            state = update(
                state,
                champion=ArmStats.proportion(50, int(rng.binomial(50, 0.9))),
                candidate=ArmStats.proportion(50, int(rng.binomial(50, 0.9))),
            )
            verdict = assess(test, state).verdict
            if verdict != Verdict.CONTINUE:
                break
        promoted += verdict == Verdict.PROMOTE
    assert promoted / 300 <= 0.05
