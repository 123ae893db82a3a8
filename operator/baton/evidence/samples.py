"""Canary samples: what each revision answered during a canary step, read from the data plane's `/metrics`.

The ingress counts every client request in its Prometheus exposition (by deployment, revision,
status, latency bucket, structured-output validity); there is one such exposition per pool, on a
cluster as on a laptop. A step's samples are the counters' growth over the scrapes taken while the
step ran, summed scrape by scrape as Prometheus' `increase()` does, so a replica that restarts
mid-step (its counters reset) loses nothing that was counted before. Shadow answers are not client
traffic and are left out. Errors are the 5xx answers; a client's 4xx is not the revision's doing, so
it is neither a sample nor an error of it.

Metrics with `provider: prometheus` are read from Prometheus instead, the candidate's and (with a
relative `tolerance`) the champion's query evaluated at one instant, so a range in the query covers
the same window for both. One without a `query`, a shell without a Prometheus URL or an unreachable
Prometheus is a failed measurement (Inconclusive), never a pass and never judged in-process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from baton.api import ModelDeployment
from baton.api.deployment import MetricProvider as MetricBackend
from baton.evidence.core import (
    ArmReadings,
    ArmSamples,
    ArmStats,
    InstantQuery,
    Measurement,
    MetricProvider,
    PrometheusProvider,
    counter_increase,
    online_outcome,
    render_query,
)
from baton.evidence.ports import Store
from baton.evidence.supervision import TaskFailure, report
from baton.rollout import ObserveCanary, OnlineResult
from baton_serving.wire import CLIENT_ENDPOINTS, SHADOW_ENDPOINT, is_client_error, is_server_error

# Scrapes that fail in a row before a step's result is Inconclusive (about half a minute of backoff).
MAX_SAMPLE_FAILURES = 5
_SERIES = {
    "baton_requests_total": "requests",
    "baton_structured_outputs_total": "structured_total",
}


@dataclass(frozen=True)
class Counts:
    """Per-revision counters of one deployment's client traffic: cumulative as scraped, or a growth.

    `latency_buckets` maps revision -> histogram bucket upper bound -> cumulative count.
    """

    requests: Mapping[str, float] = field(default_factory=dict)
    errors: Mapping[str, float] = field(default_factory=dict)
    structured_valid: Mapping[str, float] = field(default_factory=dict)
    structured_total: Mapping[str, float] = field(default_factory=dict)
    latency_buckets: Mapping[str, Mapping[float, float]] = field(default_factory=dict)

    def increase_since(self, before: Counts) -> Counts:
        """What grew from `before` to this scrape (a counter that went down was reset: all of it is new)."""

        def grown(now: Mapping, then: Mapping) -> dict:
            return {key: counter_increase(value, then.get(key, 0.0)) for key, value in now.items()}

        return self._series_by_series(before, grown, self.latency_buckets)

    def __add__(self, other: Counts) -> Counts:
        def total(first: Mapping, second: Mapping) -> dict:
            return {key: first.get(key, 0.0) + second.get(key, 0.0) for key in {*first, *second}}

        return self._series_by_series(other, total, {*self.latency_buckets, *other.latency_buckets})

    def _series_by_series(
        self, other: Counts, merge: Callable[[Mapping, Mapping], dict], revisions: Iterable[str]
    ) -> Counts:
        """`merge` applied to each counter of both, and to the latency buckets of each of `revisions`."""
        return Counts(
            requests=merge(self.requests, other.requests),
            errors=merge(self.errors, other.errors),
            structured_valid=merge(self.structured_valid, other.structured_valid),
            structured_total=merge(self.structured_total, other.structured_total),
            latency_buckets={
                revision: merge(
                    self.latency_buckets.get(revision, {}), other.latency_buckets.get(revision, {})
                )
                for revision in revisions
            },
        )

    def arm(self, revision: str) -> ArmSamples:
        """One revision's samples, when these counts are a growth."""

        def count(series: Mapping[str, float]) -> int:
            return round(series.get(revision, 0.0))

        return ArmSamples(
            requests=count(self.requests),
            errors=count(self.errors),
            latency=ArmStats.from_histogram(self.latency_buckets.get(revision, {})),
            structured=count(self.structured_total),
            valid=count(self.structured_valid),
        )


def mirrored_answers(revision: str) -> str:
    """The key under which `Counts` hold a revision's answers to mirrored (shadow) requests.

    They are not client traffic, so they never count for the revision itself; they are the
    previous champion's arm during the bake after a promotion, when it answers only mirrored copies
    of the new champion's requests. A revision name is a DNS label, so the key cannot be one.
    """
    return f"{revision}/mirrored"


def parse_exposition(text: str) -> dict[str, Counts]:
    """A pool's Prometheus exposition, as each deployment's per-revision client counters (answers to
    mirrored requests kept apart, under `mirrored_answers(revision)`)."""
    sums: dict[str, dict[str, dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    buckets: dict[str, dict[str, dict[float, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            deployment, revision = labels.get("deployment"), labels.get("revision")
            if not deployment or not revision:
                continue
            # Every series the ingress counts says which endpoint answered: one that does not is
            # not known to be client traffic, so it counts for no one.
            endpoint = labels.get("endpoint")
            if endpoint == SHADOW_ENDPOINT:
                revision = mirrored_answers(revision)
            elif endpoint not in CLIENT_ENDPOINTS:
                continue
            if sample.name == "baton_request_duration_seconds_bucket":
                buckets[deployment][revision][float(labels["le"])] += sample.value
                continue
            series = _SERIES.get(sample.name)
            if series is None:
                continue
            if series == "requests":
                # Errors are read from the status code, the one label every ingress version wrote.
                code = int(labels.get("code", "200"))
                if is_client_error(code):
                    continue  # a client's refused request is no sample of the revision
                if is_server_error(code):
                    sums[deployment]["errors"][revision] += sample.value
            sums[deployment][series][revision] += sample.value
            if series == "structured_total" and labels.get("valid") == "true":
                sums[deployment]["structured_valid"][revision] += sample.value
    return {
        deployment: Counts(
            **{name: dict(values) for name, values in sums.get(deployment, {}).items()},
            latency_buckets={revision: dict(by_bound) for revision, by_bound in buckets[deployment].items()},
        )
        for deployment in {*sums, *buckets}
    }


def window_samples(baseline: Counts, current: Counts, revision: str) -> ArmSamples:
    """What `revision` answered between two scrapes."""
    return current.increase_since(baseline).arm(revision)


@dataclass
class StepWindow:
    """The scrapes of one canary step: the last one seen and the growth summed since the first."""

    last: Counts
    total: Counts = field(default_factory=Counts)

    def add(self, scrape: Counts) -> None:
        self.total = self.total + scrape.increase_since(self.last)
        self.last = scrape


def external_readings(
    deployment: ModelDeployment,
    action: ObserveCanary,
    prometheus: MetricProvider[InstantQuery, Measurement] | None,
    at: datetime,
) -> dict[str, ArmReadings]:
    """The readings of the deployment's `provider: prometheus` metrics, by metric name: the candidate's,
    and the champion's where a `tolerance` compares the two, both evaluated at `at`."""
    readings = {}
    for metric in deployment.spec.analysis.metrics:
        if metric.provider != MetricBackend.PROMETHEUS:
            continue
        revisions = [action.candidate] + ([action.champion] if metric.tolerance is not None else [])
        measured = []
        for revision in revisions:
            if not metric.query:
                measured.append(Measurement("", None, "a prometheus metric needs query"))
            elif prometheus is None:
                measured.append(Measurement(metric.query, None, "no Prometheus URL is configured"))
            else:
                text = render_query(metric.query, deployment=deployment.metadata.name, revision=revision)
                measured.append(prometheus.query(InstantQuery(text, at.timestamp())))
        readings[metric.name] = ArmReadings(*measured)
    return readings


@dataclass(frozen=True)
class Sample:
    """One look at a canary step: the result for the core (None: keep the previous one), or why it failed."""

    result: OnlineResult | None
    failure: TaskFailure | None = None


class CanarySampler:
    """The canary steps of one store's deployments: a window per step, failures in a row, backoff.

    A scrape that fails is retried with backoff; after MAX_SAMPLE_FAILURES in a row the step's
    result is Inconclusive (the core then ends the rollout Inconclusive), as it is at once when
    the samples cannot be judged at all. Thread-safe per deployment: one sample of a deployment
    runs at a time (the k8s shell runs one task per step, local mode one tick).
    """

    def __init__(self, store: Store, prometheus_url: str | None = None) -> None:
        self.store = store
        self.prometheus: MetricProvider[InstantQuery, Measurement] | None = (
            PrometheusProvider(prometheus_url) if prometheus_url else None
        )
        self._windows: dict[str, tuple[tuple[str, int, str], StepWindow]] = {}
        self._failures: dict[str, tuple[int, datetime]] = {}  # failures in a row, next attempt

    def sample(
        self,
        deployment: ModelDeployment,
        action: ObserveCanary,
        read: Callable[[], Mapping[str, Counts]],
        started: datetime,
    ) -> Sample:
        """Read the pool's counters (`read` may raise), add them to the step's window, judge the window."""
        name = deployment.metadata.name
        failed, retry_at = self._failures.get(name, (0, started))
        if started < retry_at:
            return Sample(None)  # backing off
        try:
            scrape = read().get(name, Counts())
            step = (action.candidate, action.step, action.since)
            known = self._windows.get(name)
            if known is None or known[0] != step:
                # The step's first scrape is its baseline: requests from here on count for it.
                window = StepWindow(last=scrape)
                self._windows[name] = (step, window)
            else:
                window = known[1]
                window.add(scrape)
            # While baking, the previous champion answers only mirrored requests: those are its arm.
            mirrored = action.mirrored == action.champion
            champion = window.total.arm(mirrored_answers(action.champion) if mirrored else action.champion)
            candidate = window.total.arm(action.candidate)
            external = external_readings(deployment, action, self.prometheus, started)
            outcome = online_outcome(deployment.spec.analysis, champion, candidate, external)
        except Exception as error:
            failure = TaskFailure.of("canary sampling", error, failed + 1)
            self._failures[name] = (failure.attempt, started + timedelta(seconds=failure.retry_in))
            if failure.attempt == 1 or failure.attempt >= MAX_SAMPLE_FAILURES:
                report(self.store, ("ModelDeployment", name), failure)
            if failure.attempt < MAX_SAMPLE_FAILURES:
                return Sample(None, failure)
            self._failures.pop(name, None)
            return Sample(OnlineResult(action.candidate, action.step, 0, failure.outcome(), started), failure)
        self._failures.pop(name, None)
        return Sample(OnlineResult(action.candidate, action.step, candidate.requests, outcome, started))
