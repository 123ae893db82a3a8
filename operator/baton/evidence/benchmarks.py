"""Benchmark orchestration: both revisions answer every benchmark of a `RunBenchmark` action.

Items come from the Benchmark itself (inline), its ConfigMap (through the store: a cluster has
ConfigMaps, a laptop does not) or its digest-pinned URI. Whatever goes wrong — a Benchmark that is
missing or invalid, items that cannot be read, a scorer that cannot compile, an endpoint that
fails — the run ends in one Inconclusive offline result with the error class, and an Event; a
failed evaluation is never a pass and never leaves a deployment benchmarking forever.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from rich.console import Console

from baton.api import Benchmark, ModelDeployment
from baton.api.benchmark import BenchmarkItem
from baton.api.candidate import BenchmarkScore
from baton.evidence.core import (
    BenchmarkResult,
    BenchmarkRun,
    BenchmarkRunner,
    Footprint,
    MetricProvider,
    benchmark_scores,
    compile_scorer,
    offline_outcome,
)
from baton.evidence.ports import DataPlane, Store
from baton.evidence.supervision import EvidenceError, TaskFailure, report
from baton.rollout import OfflineResult, RunBenchmark
from baton_serving import fetch
from baton_serving.config import FetchPolicy

# Items files are lines of JSON; a suite larger than this is refused rather than read into memory.
MAX_ITEMS_BYTES = 64 << 20
ITEMS_DEADLINE_S = 60.0


@dataclass(frozen=True)
class BenchmarkOutcome:
    """The offline result the core reads, and the scores the candidate's status shows."""

    result: OfflineResult
    scores: list[BenchmarkScore]


@dataclass(frozen=True)
class BenchmarkSettings:
    concurrency: int = 2
    console: Console | None = None
    show_progress: bool = False
    fetch: FetchPolicy = field(default_factory=FetchPolicy)


def run_benchmarks(
    dataplane: DataPlane,
    store: Store,
    deployment: ModelDeployment,
    action: RunBenchmark,
    documents: Mapping[str, dict[str, Any] | Benchmark | None],
    settings: BenchmarkSettings,
) -> BenchmarkOutcome:
    """Run every benchmark of `action`; never raises: a failure is an Inconclusive result."""
    try:
        runner: MetricProvider[BenchmarkRun, BenchmarkResult] = BenchmarkRunner(
            dataplane.base_url,
            concurrency=settings.concurrency,
            console=settings.console,
            show_progress=settings.show_progress,
            api_key=dataplane.api_key,
        )
        runs = []
        for name in action.benchmarks:
            benchmark = _benchmark(name, documents.get(name))
            compile_scorer(
                benchmark.spec.scorer
            )  # a spec error is one, whether the data plane answers or not
            runs.append(
                BenchmarkRun(
                    benchmark=name,
                    deployment=deployment.metadata.name,
                    champion=action.champion,
                    candidate=action.candidate,
                    spec=benchmark.spec,
                    items=resolve_items(store, benchmark, settings.fetch),
                )
            )
        if not runner.is_online():
            # Every request would fail; the run would only measure that the endpoint is down.
            raise EvidenceError(f"the data plane at {dataplane.base_url} does not answer /v1/models")
        results = {run.benchmark: runner.query(run) for run in runs}
        outcome = offline_outcome(deployment.spec.analysis, results, footprint(deployment, action))
        scores = benchmark_scores(results)
    except Exception as error:
        failure = TaskFailure.of(f"benchmark {','.join(action.benchmarks)}", error)
        report(store, ("ModelDeployment", deployment.metadata.name), failure)
        outcome, scores = failure.outcome(), []
    return BenchmarkOutcome(OfflineResult(action.candidate, action.benchmarks, outcome), scores)


def footprint(deployment: ModelDeployment, action: RunBenchmark) -> Footprint:
    """The sizes of the two artifacts the run compares, as the status pins them with their digests."""
    status = deployment.status
    revisions = [status.champion, status.candidate] if status else []
    sizes = {revision.revision: revision.artifact.size_bytes for revision in revisions if revision}
    return Footprint(sizes.get(action.champion), sizes.get(action.candidate))


def _benchmark(name: str, document: dict[str, Any] | Benchmark | None) -> Benchmark:
    if document is None:
        raise EvidenceError(f"Benchmark {name!r} not found in the deployment's namespace")
    return document if isinstance(document, Benchmark) else Benchmark.model_validate(document)


def resolve_items(store: Store, benchmark: Benchmark, policy: FetchPolicy) -> tuple[BenchmarkItem, ...]:
    """The items of a Benchmark, from inline, its ConfigMap or its digest-pinned URI (under `policy`)."""
    spec, name = benchmark.spec, benchmark.metadata.name
    if spec.inline is not None:
        return tuple(spec.inline)
    if spec.config_map_ref is not None:
        reference = spec.config_map_ref
        text = store.config_map_text(reference.name, reference.key)
        if text is None:
            raise EvidenceError(f"ConfigMap {reference.name} has no key {reference.key!r}")
        items = yaml.safe_load(text)
        if not isinstance(items, list):
            raise EvidenceError(f"ConfigMap {reference.name} key {reference.key!r} is not a list of items")
        return tuple(BenchmarkItem.model_validate(item) for item in items)
    assert spec.uri is not None
    raw = fetch.read(spec.uri.url, policy, MAX_ITEMS_BYTES, ITEMS_DEADLINE_S)
    if "sha256:" + hashlib.sha256(raw).hexdigest() != spec.uri.digest:
        # Never the digest of what was read: it would tell the content of a file to whoever named it.
        raise EvidenceError(
            f"Benchmark {name}: the items at {fetch.shown(spec.uri.url)} are not {spec.uri.digest}"
        )
    lines = raw.decode().splitlines()
    return tuple(BenchmarkItem.model_validate_json(line) for line in lines if line.strip())
