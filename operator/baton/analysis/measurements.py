"""What the shells measured, as plain values: the gates judge these and nothing else.

Kept apart from the providers that produce them (Prometheus over HTTP, the benchmark runner over
the OpenAI endpoint), so the analysis core imports no I/O library: a shell measures with a
provider, then hands these frozen results to the pure gates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from baton.api.benchmark import BenchmarkItem, BenchmarkSpec


@dataclass(frozen=True)
class Measurement:
    """One scalar reading. `value` None means no data; `error` says why the query failed."""

    query: str
    value: float | None
    error: str | None = None


@dataclass(frozen=True)
class ArmReadings:
    """One metric read for both arms at the same instant; `champion` None when only the candidate's
    value is judged (an absolute bound)."""

    candidate: Measurement
    champion: Measurement | None = None


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
class BenchmarkRun:
    """One offline comparison: the deployment (OpenAI `model`), both revisions, the suite and its items.

    `items` are passed resolved (the shell reads inline items, ConfigMaps or URIs), so the runner
    never needs Kubernetes.
    """

    benchmark: str
    deployment: str
    champion: str
    candidate: str
    spec: BenchmarkSpec
    items: tuple[BenchmarkItem, ...]


@dataclass(frozen=True)
class ItemResult:
    """One revision's result on one item: a score, or the error that prevented scoring.

    `latency_s` is the whole request; `output_tokens` what the revision generated in it (the
    response's usage), so a run measures throughput on the very items it scores.
    """

    item_id: str
    revision: str
    score: float | None
    error: str | None
    latency_s: float
    output_tokens: int = 0


@dataclass(frozen=True)
class BenchmarkResult:
    run: BenchmarkRun
    results: tuple[ItemResult, ...]

    def errors_by_kind(self) -> Counter[str]:
        return Counter(result.error for result in self.results if result.error is not None)

    def paired_scores(self) -> PairedScores:
        """Scores of items both revisions answered, in item order, with every failed attempt counted."""
        by_key = {(result.item_id, result.revision): result for result in self.results}
        ids, champion, candidate, groups = [], [], [], []
        for item in self.run.items:
            first = by_key.get((item.id, self.run.champion))
            second = by_key.get((item.id, self.run.candidate))
            if first and second and first.score is not None and second.score is not None:
                ids.append(item.id)
                champion.append(first.score)
                candidate.append(second.score)
                groups.append(item.group)
        return PairedScores(
            item_ids=tuple(ids),
            champion=tuple(champion),
            candidate=tuple(candidate),
            groups=tuple(groups),
            n_errors=sum(result.error is not None for result in self.results),
            n_attempted=len(self.results),
        )
