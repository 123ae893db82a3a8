"""The gain gate: a candidate that must be cheaper than the champion shows it in its own benchmark run.

Non-inferiority only says the candidate is not much worse; a cheaper quantization is worth the risk
of a rollout only if the saving is real. The saving is measured where the quality is, in the run
that judges the candidate, so both come from the same revisions under the same conditions. A file
size is a fact (pinned with the digest); a throughput is a noisy measurement, so it has to be shown
by the lower confidence bound of the per-item paired ratio, not by a lucky mean. A gain that
cannot be measured is Inconclusive, never a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from baton.analysis.measurements import BenchmarkResult
from baton.analysis.outcome import GateOutcome
from baton.api.decision import Evidence, Gate, Verdict
from baton.api.deployment import GainResource, RequiredGain

REASON_GAIN_SHOWN = "GainShown"
REASON_NO_GAIN = "GainTooSmall"
REASON_GAIN_UNMEASURED = "GainUnmeasured"


@dataclass(frozen=True)
class Footprint:
    """What the benchmark run knows of each revision's cost: its artifact's size in bytes, if declared."""

    champion_bytes: int | None
    candidate_bytes: int | None


def throughput_pairs(results: BenchmarkResult) -> tuple[np.ndarray, np.ndarray]:
    """Generated tokens per second of each arm, on the items both answered with at least one token."""
    by_key = {(result.item_id, result.revision): result for result in results.results}
    champion, candidate = [], []
    for item in results.run.items:
        first = by_key.get((item.id, results.run.champion))
        second = by_key.get((item.id, results.run.candidate))
        if first is None or second is None or first.error or second.error:
            continue
        if min(first.output_tokens, second.output_tokens) < 1 or min(first.latency_s, second.latency_s) <= 0:
            continue
        champion.append(first.output_tokens / first.latency_s)
        candidate.append(second.output_tokens / second.latency_s)
    return np.asarray(champion), np.asarray(candidate)


def gain_gate(
    requirement: RequiredGain,
    footprint: Footprint,
    results: list[BenchmarkResult],
    *,
    alpha: float,
    min_samples: int,
) -> GateOutcome:
    """Promote when the candidate saves at least `requirement.at_least` of the champion's cost."""
    if GainResource(requirement.resource) == GainResource.FILE_SIZE:
        return _file_size(requirement, footprint)
    champion = np.concatenate([throughput_pairs(result)[0] for result in results] or [np.empty(0)])
    candidate = np.concatenate([throughput_pairs(result)[1] for result in results] or [np.empty(0)])
    return _throughput(requirement, champion, candidate, alpha, min_samples)


def _file_size(requirement: RequiredGain, footprint: Footprint) -> GateOutcome:
    metric = str(GainResource.FILE_SIZE)
    if not footprint.champion_bytes or not footprint.candidate_bytes:
        return GateOutcome(
            Verdict.INCONCLUSIVE,
            Gate.OFFLINE,
            REASON_GAIN_UNMEASURED,
            f"{metric}: an artifact without sizeBytes has no size to compare",
        )
    saving = 1 - footprint.candidate_bytes / footprint.champion_bytes
    evidence = Evidence(
        test="gain",
        metric=metric,
        n_champion=1,
        n_candidate=1,
        effect=saving,
        threshold=requirement.at_least,
        value=float(footprint.candidate_bytes),
    )
    summary = (
        f"{metric}: {footprint.candidate_bytes} bytes against the champion's {footprint.champion_bytes} "
        f"({saving:+.1%} smaller, {requirement.at_least:.0%} needed)"
    )
    return _judged(saving, requirement, summary, evidence)


def _throughput(
    requirement: RequiredGain, champion: np.ndarray, candidate: np.ndarray, alpha: float, min_samples: int
) -> GateOutcome:
    metric = str(GainResource.TOKENS_PER_SECOND)
    n = int(champion.size)
    if n < max(min_samples, 2):
        return GateOutcome(
            Verdict.INCONCLUSIVE,
            Gate.OFFLINE,
            REASON_GAIN_UNMEASURED,
            f"{metric}: {n} items with a measured throughput in both arms, {max(min_samples, 2)} needed",
        )
    # Per-item log ratios: the item's own length and difficulty cancel, and a ratio is what is asked.
    ratios = np.log(candidate) - np.log(champion)
    mean = float(ratios.mean())
    se = float(ratios.std(ddof=1) / math.sqrt(n))
    low = mean - float(stats.t.ppf(1 - alpha, n - 1)) * se
    gain, gain_low = math.exp(mean) - 1, math.exp(low) - 1
    evidence = Evidence(
        test="paired-log-ratio",
        metric=metric,
        n_champion=n,
        n_candidate=n,
        effect=gain,
        ci_low=gain_low,
        alpha=alpha,
        threshold=requirement.at_least,
        value=float(np.mean(candidate)),
    )
    summary = (
        f"{metric}: {np.mean(candidate):.1f} against the champion's {np.mean(champion):.1f} on {n} paired "
        f"items, {gain:+.1%} (lower {1 - alpha:.0%} bound {gain_low:+.1%}, {requirement.at_least:.0%} needed)"
    )
    return _judged(gain_low, requirement, summary, evidence)


def _judged(shown: float, requirement: RequiredGain, summary: str, evidence: Evidence) -> GateOutcome:
    """Promote when the gain `shown` (a share of the champion's value) reaches the requirement."""
    if shown >= requirement.at_least:
        return GateOutcome(Verdict.PROMOTE, Gate.OFFLINE, REASON_GAIN_SHOWN, summary, (evidence,))
    return GateOutcome(Verdict.REJECT, Gate.OFFLINE, REASON_NO_GAIN, summary, (evidence,))
