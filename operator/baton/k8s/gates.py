"""Gathering the gates' evidence for the operator: benchmark runs and live canary samples.

The rollout core asks (`RunBenchmark`, `ObserveCanary`); this module measures with the analysis
providers and turns measurements into `GateOutcome`s with the analysis core's pure functions.
It never decides a phase: the core does. Blocking calls; the controller runs them in threads.

Live samples come from the pool's own `/metrics` (the in-process provider: per-revision request,
error and latency counters since the canary step started) or from Prometheus for metrics with
`provider: prometheus`. Anything that cannot be measured is an evaluation failure, never a pass.
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

from baton.analysis import GateOutcome, OfflinePolicy, SanityLimits, decide, evaluation_failed, offline_gate
from baton.analysis.providers import Measurement
from baton.analysis.providers.benchmark import BenchmarkRun, BenchmarkRunner
from baton.analysis.providers.prometheus import PrometheusProvider, render_query
from baton.analysis.verdict import threshold_gate
from baton.api import Benchmark, ModelDeployment, Verdict
from baton.api.benchmark import BenchmarkItem
from baton.api.decision import Gate
from baton.api.deployment import MetricKind, MetricProvider
from baton.k8s.kube import Kube
from baton.rollout import ObserveCanary, RunBenchmark

CANARY_SAMPLE_INTERVAL_S = 2.0


@dataclass(frozen=True)
class Counts:
    """Cumulative per-revision counters of one deployment, read from the pool's `/metrics`."""

    requests: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)
    latency_sum: Mapping[str, float] = field(default_factory=dict)
    latency_count: Mapping[str, float] = field(default_factory=dict)
    structured_valid: Mapping[str, float] = field(default_factory=dict)
    structured_total: Mapping[str, float] = field(default_factory=dict)


# --- offline ------------------------------------------------------------------------------------


def offline_outcome(
    kube: Kube,
    endpoint: str,
    deployment: ModelDeployment,
    action: RunBenchmark,
    benchmarks: Mapping[str, dict[str, Any] | None],
    concurrency: int,
) -> GateOutcome:
    """Both revisions answer every benchmark; one combined, fail-closed verdict."""
    analysis = deployment.spec.analysis
    runner = BenchmarkRunner(endpoint, concurrency=concurrency, show_progress=False)
    outcomes = []
    for name in action.benchmarks:
        document = benchmarks.get(name)
        if document is None:
            outcomes.append(
                evaluation_failed(name, f"Benchmark {name!r} not found in the deployment's namespace")
            )
            continue
        benchmark = Benchmark.model_validate(document)
        try:
            items = resolve_items(kube, benchmark)
        except (OSError, ValueError, httpx.HTTPError) as error:
            outcomes.append(evaluation_failed(name, f"cannot read the items of Benchmark {name!r}: {error}"))
            continue
        run = BenchmarkRun(
            benchmark=name,
            deployment=deployment.metadata.name,
            champion=action.champion,
            candidate=action.candidate,
            spec=benchmark.spec,
            items=items,
        )
        result = runner.query(run)
        policy = OfflinePolicy(
            benchmark=name,
            alpha=analysis.alpha,
            margin=analysis.margin or 0.0,
            limits=SanityLimits(
                min_valid_samples=analysis.min_samples, max_error_rate=analysis.max_error_rate
            ),
        )
        outcomes.append(offline_gate(result.paired_scores(), policy))
    return decide(outcomes)


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
        return httpx.get(f"{endpoint}/v1/baton/revisions", timeout=5.0).raise_for_status().json()
    except (httpx.HTTPError, ValueError):
        return None


# --- online -------------------------------------------------------------------------------------


def scrape_counts(endpoint: str, deployment: str) -> Counts:
    """Read the pool's Prometheus exposition and keep this deployment's per-revision counters."""
    text = httpx.get(f"{endpoint}/metrics", timeout=10.0).raise_for_status().text
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("deployment") != deployment:
                continue
            revision = labels.get("revision", "")
            match sample.name:
                case "baton_requests_total":
                    sums["requests"][revision] += sample.value
                case "baton_request_errors_total":
                    sums["errors"][revision] += sample.value
                case "baton_request_duration_seconds_sum":
                    sums["latency_sum"][revision] += sample.value
                case "baton_request_duration_seconds_count":
                    sums["latency_count"][revision] += sample.value
                case "baton_structured_outputs_total":
                    sums["structured_total"][revision] += sample.value
                    if labels.get("valid") == "true":
                        sums["structured_valid"][revision] += sample.value
    return Counts(**{name: dict(values) for name, values in sums.items()})


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
    """Every live metric checked against its bound, and the candidate's requests since the step began."""
    candidate = action.candidate

    def delta(series: str) -> float:
        return getattr(current, series).get(candidate, 0.0) - getattr(baseline, series).get(candidate, 0.0)

    requests = delta("requests")  # answered and failed alike (the counter is labelled by HTTP code)
    outcomes = []
    for metric in deployment.spec.analysis.metrics:
        if metric.provider == MetricProvider.PROMETHEUS:
            measurement = _prometheus(metric.query or "", deployment.metadata.name, candidate, prometheus_url)
        else:
            measurement = _in_process(metric.kind, delta)
        if metric.max_value is None:
            outcomes.append(evaluation_failed(metric.name, "a live metric needs maxValue to be judged"))
        else:
            outcomes.append(
                threshold_gate(
                    metric.name, measurement, max_value=metric.max_value, alpha=deployment.spec.analysis.alpha
                )
            )
    if not outcomes:
        outcomes.append(
            GateOutcome(
                Verdict.CONTINUE, Gate.ONLINE, "NoLiveMetrics", "no live metrics configured for the canary"
            )
        )
    return decide(outcomes), int(requests)


def _in_process(kind: MetricKind, delta: Any) -> Measurement:
    query = f"in-process {kind}"
    match kind:
        case MetricKind.ERROR_RATE:
            total, failed = delta("requests"), delta("errors")
            return Measurement(query, failed / total if total else None, None if total else "no requests yet")
        case MetricKind.LATENCY:
            count = delta("latency_count")
            return Measurement(
                query, delta("latency_sum") / count if count else None, None if count else "no data"
            )
        case _:
            total = delta("structured_total")
            invalid = total - delta("structured_valid")
            return Measurement(
                query, invalid / total if total else None, None if total else "no structured answers"
            )


def _prometheus(query: str, deployment: str, revision: str, url: str | None) -> Measurement:
    text = render_query(query, deployment=deployment, revision=revision)
    if url is None:
        return Measurement(text, None, "the operator runs without --prometheus-url")
    return PrometheusProvider(url).query(text)
