"""The gain gate and its place beside non-inferiority in the offline outcome (`analysis.requireGain`)."""

from __future__ import annotations

import numpy as np
import pytest

from baton.analysis.gain import Footprint, gain_gate
from baton.analysis.gates import offline_outcome
from baton.analysis.measurements import BenchmarkResult, BenchmarkRun, ItemResult
from baton.api import Verdict
from baton.api.benchmark import BenchmarkItem, BenchmarkSpec
from baton.api.deployment import AnalysisSpec, RequiredGain

pytestmark = pytest.mark.unit

CHAMPION, CANDIDATE = "medical-v1", "medical-v1-q4-k-m"
ITEMS = tuple(BenchmarkItem(id=f"q{index}", prompt="dose?", expected="5 mg") for index in range(100))
SPEC = BenchmarkSpec(domain="medical", inline=list(ITEMS[:1]), scorer={"type": "exact"})
SIZE = RequiredGain(resource="fileSize", at_least=0.3)
SPEED = RequiredGain(resource="tokensPerSecond", at_least=0.2)


def run(
    *,
    champion_score: float = 1.0,
    candidate_score: float = 1.0,
    speedup: float = 1.0,
    jitter: float = 0.05,
    tokens: int = 16,
    seed: int = 0,
) -> BenchmarkResult:
    """Both arms on every item; the candidate generates `speedup` times as fast, with noise per item."""
    rng = np.random.default_rng(seed)
    results = []
    for item in ITEMS:
        base = 0.2 * rng.uniform(0.5, 2.0)  # items differ in length; pairing cancels that
        noise = np.exp(rng.normal(0, jitter, 2))
        results.append(ItemResult(item.id, CHAMPION, champion_score, None, base * noise[0], tokens))
        faster = base / speedup * noise[1]
        results.append(ItemResult(item.id, CANDIDATE, candidate_score, None, faster, tokens))
    benchmark = BenchmarkRun("medical-qa", "medical", CHAMPION, CANDIDATE, SPEC, ITEMS)
    return BenchmarkResult(benchmark, tuple(results))


@pytest.mark.parametrize(
    ("champion_bytes", "candidate_bytes", "verdict", "reason"),
    [
        (3_500_000, 2_000_000, Verdict.PROMOTE, "GainShown"),  # Q8_0 -> Q4_K_M: 43 % smaller
        (3_500_000, 3_000_000, Verdict.REJECT, "GainTooSmall"),  # 14 % smaller, 30 % needed
        (3_500_000, 4_000_000, Verdict.REJECT, "GainTooSmall"),  # larger
        (3_500_000, None, Verdict.INCONCLUSIVE, "GainUnmeasured"),
        (None, 2_000_000, Verdict.INCONCLUSIVE, "GainUnmeasured"),
    ],
)
def test_file_size_gain(champion_bytes, candidate_bytes, verdict, reason) -> None:
    outcome = gain_gate(SIZE, Footprint(champion_bytes, candidate_bytes), [], alpha=0.05, min_samples=30)
    assert (outcome.verdict, outcome.reason) == (verdict, reason)
    if verdict != Verdict.INCONCLUSIVE:
        (evidence,) = outcome.evidence
        assert evidence.metric == "fileSize" and evidence.threshold == 0.3
        assert evidence.effect == pytest.approx(1 - candidate_bytes / champion_bytes)


@pytest.mark.parametrize(
    ("speedup", "jitter", "verdict"),
    [
        (2.0, 0.05, Verdict.PROMOTE),  # twice as fast, clearly
        (1.0, 0.05, Verdict.REJECT),  # as fast: no gain
        (1.25, 0.05, Verdict.PROMOTE),  # 25 % faster, tight measurements: the bound clears 20 %
        (1.25, 0.6, Verdict.REJECT),  # 25 % faster on average, but too noisy to show 20 %
    ],
)
def test_throughput_gain_is_shown_by_its_lower_bound(speedup, jitter, verdict) -> None:
    result = run(speedup=speedup, jitter=jitter)
    outcome = gain_gate(SPEED, Footprint(None, None), [result], alpha=0.05, min_samples=30)
    assert outcome.verdict == verdict, outcome.message
    (evidence,) = outcome.evidence
    assert evidence.test == "paired-log-ratio" and evidence.n_candidate == len(ITEMS)
    assert evidence.ci_low < evidence.effect


def test_throughput_without_generated_tokens_or_enough_items_is_unmeasured() -> None:
    silent = gain_gate(SPEED, Footprint(None, None), [run(tokens=0)], alpha=0.05, min_samples=30)
    assert (silent.verdict, silent.reason) == (Verdict.INCONCLUSIVE, "GainUnmeasured")
    few = gain_gate(SPEED, Footprint(None, None), [run(speedup=2)], alpha=0.05, min_samples=101)
    assert (few.verdict, few.reason) == (Verdict.INCONCLUSIVE, "GainUnmeasured")


def analysis(**extra) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"benchmarks": [{"name": "medical-qa"}], "mode": "nonInferiority", "margin": 0.05, **extra}
    )


@pytest.mark.parametrize(
    ("candidate_score", "candidate_bytes", "verdict", "reason"),
    [
        (1.0, 2_000_000, Verdict.PROMOTE, "BenchmarkNonInferior"),
        (1.0, 3_400_000, Verdict.REJECT, "GainTooSmall"),  # as good, but not cheaper
        (0.0, 2_000_000, Verdict.REJECT, "BenchmarkRegression"),  # cheaper, but far worse
        (1.0, None, Verdict.INCONCLUSIVE, "GainUnmeasured"),
    ],
)
def test_require_gain_needs_non_inferiority_and_the_gain(
    candidate_score, candidate_bytes, verdict, reason
) -> None:
    spec = analysis(requireGain={"resource": "fileSize", "atLeast": 0.3})
    # Scores vary per item so the paired test has spread: 90 % of items right in each arm.
    result = run(candidate_score=candidate_score)
    varied = tuple(
        one if int(one.item_id[1:]) % 10 else ItemResult(one.item_id, one.revision, 0.0, None, 0.1, 16)
        for one in result.results
    )
    result = BenchmarkResult(result.run, varied)
    outcome = offline_outcome(spec, {"medical-qa": result}, Footprint(3_500_000, candidate_bytes))
    assert (outcome.verdict, outcome.reason) == (verdict, reason), outcome.message
    metrics = {evidence.metric for evidence in outcome.evidence}
    if verdict == Verdict.PROMOTE:
        assert metrics == {"fileSize", "medical-qa"}  # both gates are in the decision's evidence
        assert "fileSize" in outcome.message and "medical-qa" in outcome.message


def test_without_require_gain_the_footprint_is_not_consulted() -> None:
    outcome = offline_outcome(analysis(), {"medical-qa": run()}, Footprint(1, 1_000_000))
    assert {evidence.metric for evidence in outcome.evidence} == {"medical-qa"}
