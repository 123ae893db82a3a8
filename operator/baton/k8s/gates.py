"""Gathering the gates' evidence for the operator: benchmark runs and live canary samples.

The rollout core asks (`RunBenchmark`, `ObserveCanary`); this module measures with the analysis
providers and hands the measurements to `baton.analysis.gates`, the same pure judgement `baton up`
uses. It never decides a phase: the core does. Blocking calls; the controller runs them in threads.

Live samples come from the pool's own `/metrics` (per-revision request, error, latency-histogram
and structured-output counters since the canary step started, client traffic only) or from
Prometheus for metrics with `provider: prometheus`. Anything that cannot be measured is an
evaluation failure, never a pass.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from baton.analysis import ArmStats, GateOutcome, decide, evaluation_failed
from baton.analysis import gates as analysis_gates
from baton.analysis.gates import ArmSamples, benchmark_scores
from baton.analysis.measurements import BenchmarkResult, BenchmarkRun, Measurement
from baton.analysis.online import counter_increase
from baton.analysis.providers.benchmark import BenchmarkRunner
from baton.analysis.providers.prometheus import PrometheusProvider, render_query
from baton.api import Benchmark, ModelDeployment, Verdict
from baton.api.benchmark import BenchmarkItem
from baton.api.candidate import BenchmarkScore
from baton.api.decision import Gate
from baton.api.deployment import MetricProvider
from baton.k8s.kube import Kube
from baton.rollout import ObserveCanary, RunBenchmark
from baton_serving.metrics import CLIENT_ENDPOINTS

# One client for the frequent reads of the pools' ingresses (revision statuses every second, canary
# samples every 2 s): `httpx.get` builds a client, and with it a TLS context from the CA bundle, per
# call, which was a third of the operator's CPU at 1,000 deployments (py-spy).
_DATA_PLANE = httpx.Client(timeout=10.0)


@dataclass(frozen=True)
class Counts:
    """Cumulative per-revision counters of one deployment's client traffic, read from the pool's `/metrics`.

    `latency_buckets` maps revision -> histogram bucket upper bound -> cumulative count.
    """

    requests: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)
    structured_valid: Mapping[str, float] = field(default_factory=dict)
    structured_total: Mapping[str, float] = field(default_factory=dict)
    latency_buckets: Mapping[str, Mapping[float, float]] = field(default_factory=dict)


# --- offline ------------------------------------------------------------------------------------


def offline_outcome(
    kube: Kube,
    endpoint: str,
    deployment: ModelDeployment,
    action: RunBenchmark,
    benchmarks: Mapping[str, dict[str, Any] | None],
    concurrency: int,
) -> tuple[GateOutcome, list[BenchmarkScore]]:
    """Both revisions answer every benchmark: one combined, fail-closed verdict, and the scores."""
    runner = BenchmarkRunner(endpoint, concurrency=concurrency, show_progress=False)
    failures: list[GateOutcome] = []
    results: dict[str, BenchmarkResult] = {}
    for name in action.benchmarks:
        document = benchmarks.get(name)
        if document is None:
            failures.append(
                evaluation_failed(name, f"Benchmark {name!r} not found in the deployment's namespace")
            )
            continue
        benchmark = Benchmark.model_validate(document)
        try:
            items = resolve_items(kube, benchmark)
        except (OSError, ValueError, httpx.HTTPError) as error:
            failures.append(evaluation_failed(name, f"cannot read the items of Benchmark {name!r}: {error}"))
            continue
        run = BenchmarkRun(
            benchmark=name,
            deployment=deployment.metadata.name,
            champion=action.champion,
            candidate=action.candidate,
            spec=benchmark.spec,
            items=items,
        )
        results[name] = runner.query(run)
    if failures:
        return decide(failures), benchmark_scores(results)
    return analysis_gates.offline_outcome(deployment.spec.analysis, results), benchmark_scores(results)


def resolve_items(kube: Kube, benchmark: Benchmark) -> tuple[BenchmarkItem, ...]:
    """The items of a Benchmark, from inline, its ConfigMap or its digest-pinned URI."""
    spec = benchmark.spec
    if spec.inline is not None:
        return tuple(spec.inline)
    if spec.config_map_ref is not None:
        namespace = benchmark.metadata.namespace or "default"
        config_map = kube.core.read_namespaced_config_map(spec.config_map_ref.name, namespace)
        text = (config_map.data or {}).get(spec.config_map_ref.key)
        if text is None:
            raise ValueError(f"ConfigMap {spec.config_map_ref.name} has no key {spec.config_map_ref.key!r}")
        return tuple(BenchmarkItem.model_validate(item) for item in yaml.safe_load(text))
    assert spec.uri is not None
    if spec.uri.url.startswith(("http://", "https://")):
        raw = httpx.get(spec.uri.url, timeout=30.0, follow_redirects=True).raise_for_status().content
    else:
        with open(spec.uri.url.removeprefix("file://"), "rb") as stream:
            raw = stream.read()
    actual = "sha256:" + hashlib.sha256(raw).hexdigest()
    if actual != spec.uri.digest:
        raise ValueError(f"{spec.uri.url}: digest {actual} does not match {spec.uri.digest}")
    lines = raw.decode().splitlines()
    return tuple(BenchmarkItem.model_validate_json(line) for line in lines if line.strip())


# --- data plane ---------------------------------------------------------------------------------


def engine_statuses(endpoint: str) -> dict[str, dict[str, Any]] | None:
    """The ingress's view of every revision (`ready`, refusal `error`), or None if it does not answer."""
    try:
        return _DATA_PLANE.get(f"{endpoint}/v1/baton/revisions", timeout=5.0).raise_for_status().json()
    except (httpx.HTTPError, ValueError):
        return None


# --- online -------------------------------------------------------------------------------------


def scrape_counts(endpoint: str, deployment: str) -> Counts:
    """Read the pool's Prometheus exposition and keep this deployment's per-revision client counters."""
    text = _DATA_PLANE.get(f"{endpoint}/metrics").raise_for_status().text
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("deployment") != deployment:
                continue
            revision = labels.get("revision", "")
            if labels.get("endpoint", "chat_completions") not in CLIENT_ENDPOINTS:
                continue  # shadow answers are not client traffic
            match sample.name:
                case "baton_requests_total":
                    sums["requests"][revision] += sample.value
                case "baton_request_errors_total":
                    sums["errors"][revision] += sample.value
                case "baton_request_duration_seconds_bucket":
                    buckets[revision][float(labels["le"])] += sample.value
                case "baton_structured_outputs_total":
                    sums["structured_total"][revision] += sample.value
                    if labels.get("valid") == "true":
                        sums["structured_valid"][revision] += sample.value
    return Counts(
        **{name: dict(values) for name, values in sums.items()},
        latency_buckets={revision: dict(by_bound) for revision, by_bound in buckets.items()},
    )


def canary_outcome(
    endpoint: str,
    deployment: ModelDeployment,
    action: ObserveCanary,
    baseline: dict[str, Counts],
    prometheus_url: str | None,
) -> tuple[GateOutcome, int]:
    """Scrape the pool, remember the first scrape of the step as its baseline, judge the difference."""
    try:
        counts = scrape_counts(endpoint, deployment.metadata.name)
    except httpx.HTTPError as error:
        if deployment.spec.analysis.metrics:
            return evaluation_failed("canary", f"cannot read {endpoint}/metrics: {error}"), 0
        return GateOutcome(Verdict.CONTINUE, Gate.ONLINE, "NoLiveMetrics", "no live metrics configured"), 0
    first = baseline.setdefault("counts", counts)
    return online_outcome(deployment, action, first, counts, prometheus_url)


def online_outcome(
    deployment: ModelDeployment,
    action: ObserveCanary,
    baseline: Counts,
    current: Counts,
    prometheus_url: str | None = None,
) -> tuple[GateOutcome, int]:
    """The step's samples of both arms judged by the shared online gate, and the candidate's requests."""
    champion = window_samples(baseline, current, action.champion)
    candidate = window_samples(baseline, current, action.candidate)
    name = deployment.metadata.name
    external = {
        metric.name: _prometheus(metric.query or "", name, action.candidate, prometheus_url)
        for metric in deployment.spec.analysis.metrics
        if metric.provider == MetricProvider.PROMETHEUS
    }
    outcome = analysis_gates.online_outcome(deployment.spec.analysis, champion, candidate, external)
    return outcome, candidate.requests


def window_samples(baseline: Counts, current: Counts, revision: str) -> ArmSamples:
    """What `revision` answered between two scrapes (a counter that went down was reset: all of it is new)."""

    def delta(series: str) -> int:
        now, before = getattr(current, series), getattr(baseline, series)
        return round(counter_increase(now.get(revision, 0.0), before.get(revision, 0.0)))

    before = baseline.latency_buckets.get(revision, {})
    buckets = {
        bound: counter_increase(count, before.get(bound, 0.0))
        for bound, count in current.latency_buckets.get(revision, {}).items()
    }
    return ArmSamples(
        requests=delta("requests"),
        errors=delta("errors"),
        latency=ArmStats.from_histogram(buckets),
        structured=delta("structured_total"),
        valid=delta("structured_valid"),
    )


def _prometheus(query: str, deployment: str, revision: str, url: str | None) -> Measurement:
    text = render_query(query, deployment=deployment, revision=revision)
    if url is None:
        return Measurement(text, None, "the operator runs without --prometheus-url")
    return PrometheusProvider(url).query(text)
