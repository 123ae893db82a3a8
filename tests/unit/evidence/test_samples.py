"""Canary samples from the data plane's own metrics, judged by the analysis core's tests (both shells)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from baton.analysis.gates import ArmSamples, online_outcome
from baton.api import AnalysisSpec, Verdict
from baton.evidence.samples import (
    CanarySampler,
    Counts,
    StepWindow,
    mirrored_answers,
    parse_exposition,
    window_samples,
)
from baton.rollout import CANARY_SAMPLE_INTERVAL_S, ObserveCanary, next_sample_delay
from tests.unit.evidence.stores import RecordingStore
from tests.unit.rollout.helpers import CANDIDATE, CHAMPION, NOW, deployment

pytestmark = pytest.mark.unit

LABELS = ("pool", "deployment", "revision")


class FakeIngress:
    """Real prometheus_client metrics with the data plane's names, exposed as text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("baton_requests", "", [*LABELS, "endpoint", "code"], registry=self.registry)
        self.errors = Counter(
            "baton_request_errors", "", [*LABELS, "endpoint", "type"], registry=self.registry
        )
        self.duration = Histogram(
            "baton_request_duration_seconds",
            "",
            [*LABELS, "endpoint"],
            buckets=(0.1, 0.5, 1.0),
            registry=self.registry,
        )
        self.structured = Counter(
            "baton_structured_outputs", "", [*LABELS, "endpoint", "valid"], registry=self.registry
        )

    def answer(
        self,
        revision: str,
        seconds: float,
        code: str = "200",
        endpoint: str = "chat_completions",
        valid: bool | None = None,
    ) -> None:
        self.requests.labels("p", "medical", revision, endpoint, code).inc()
        if code.startswith("5"):
            self.errors.labels("p", "medical", revision, endpoint, "server_error").inc()
        if not code.startswith("4"):  # as the ingress does: a client's 4xx has no latency
            self.duration.labels("p", "medical", revision, endpoint).observe(seconds)
        if valid is not None:  # an answer to a JSON-schema response format
            self.structured.labels("p", "medical", revision, endpoint, str(valid).lower()).inc()

    def counts(self) -> Counts:
        return parse_exposition(generate_latest(self.registry).decode()).get("medical", Counts())


def test_only_requests_after_the_window_opened_count_for_it():
    ingress = FakeIngress()
    for _ in range(5):
        ingress.answer("medical-v2", 0.05)
    before = ingress.counts()
    window = StepWindow(last=before)
    for _ in range(3):
        ingress.answer("medical-v2", 0.3)
    ingress.answer("medical-v2", 0.7, code="500")
    ingress.answer("medical-v2", 0.3, endpoint="shadow")
    window.add(ingress.counts())
    window.add(ingress.counts())  # an unchanged scrape adds nothing
    samples = window.total.arm("medical-v2")
    assert (samples.requests, samples.errors) == (4, 1)
    assert samples.latency.n == 4
    assert samples.latency.mean == pytest.approx((3 * 0.3 + 0.75) / 4), "bucket midpoints"
    assert window_samples(Counts(), before, "medical-v2").requests == 5


def test_ollama_traffic_counts_like_openai_traffic():
    """Clients of the Ollama-compatible API are canary samples too (and their 5xx are errors)."""
    ingress = FakeIngress()
    window = StepWindow(last=ingress.counts())
    for endpoint in ("chat_completions", "completions", "ollama_chat", "ollama_generate"):
        ingress.answer("medical-v2", 0.3, endpoint=endpoint)
    ingress.answer("medical-v2", 0.7, code="500", endpoint="ollama_chat")
    ingress.answer("medical-v2", 0.001, code="400", endpoint="ollama_generate")
    window.add(ingress.counts())
    samples = window.total.arm("medical-v2")
    assert (samples.requests, samples.errors, samples.latency.n) == (5, 1, 5)


def test_a_clients_4xx_is_neither_a_sample_nor_an_error_of_the_revision():
    """A client sending bad requests that are routed to the candidate cannot force its rollback."""
    ingress = FakeIngress()
    window = StepWindow(last=ingress.counts())
    for _ in range(3):
        ingress.answer("medical-v2", 0.3)
    ingress.answer("medical-v2", 0.3, code="503")
    for code in ("400", "404", "413", "429"):
        for _ in range(50):
            ingress.answer("medical-v2", 0.001, code=code)
            # as an ingress before this rule recorded them: an error by type, no code to tell
            ingress.errors.labels(
                "p", "medical", "medical-v2", "chat_completions", "invalid_request_error"
            ).inc()
    window.add(ingress.counts())
    samples = window.total.arm("medical-v2")
    assert (samples.requests, samples.errors) == (4, 1)


def test_a_reset_counter_counts_again_from_zero():
    first = FakeIngress()
    window = StepWindow(last=Counts())
    for _ in range(4):
        first.answer("medical-v1", 0.05)
    window.add(first.counts())
    restarted = FakeIngress()
    restarted.answer("medical-v1", 0.05)
    window.add(restarted.counts())
    assert window.total.arm("medical-v1").requests == 5


def test_a_reset_counter_counts_from_zero() -> None:
    before = Counts(requests={CANDIDATE: 500.0}, latency_buckets={CANDIDATE: {0.1: 500.0, math.inf: 500.0}})
    after = Counts(requests={CANDIDATE: 30.0}, latency_buckets={CANDIDATE: {0.1: 30.0, math.inf: 30.0}})
    samples = window_samples(before, after, CANDIDATE)
    assert (samples.requests, samples.latency.n, samples.latency.mean) == (30, 30, 0.05)


def analysis(**overrides) -> AnalysisSpec:
    return AnalysisSpec.model_validate(
        {"minSamples": 30, "metrics": [{"name": "error-rate", "kind": "errorRate", "maxValue": 0.05}]}
        | overrides
    )


def test_too_few_samples_continue():
    outcome = online_outcome(analysis(), ArmSamples(requests=10), ArmSamples(requests=5, errors=5))
    assert outcome.verdict == Verdict.CONTINUE


def test_a_failing_candidate_is_rejected_by_the_error_rate():
    outcome = online_outcome(analysis(), ArmSamples(requests=200), ArmSamples(requests=200, errors=60))
    assert outcome.verdict == Verdict.REJECT
    assert {evidence.metric for evidence in outcome.evidence} == {"error-rate"}


def test_equal_healthy_arms_pass_the_guardrail_once_shown_within_its_tolerance():
    outcome = online_outcome(analysis(), ArmSamples(requests=400), ArmSamples(requests=400))
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "NoRegression")
    assert outcome.evidence[0].n_candidate == 400
    # not yet shown within the tolerance: still collecting, never a pass for lack of evidence
    outcome = online_outcome(analysis(), ArmSamples(requests=100), ArmSamples(requests=100))
    assert (outcome.verdict, outcome.reason) == (Verdict.CONTINUE, "CollectingSamples")
    outcome = online_outcome(analysis(), ArmSamples(requests=200), ArmSamples(requests=10))
    assert (outcome.verdict, outcome.reason) == (Verdict.CONTINUE, "CollectingSamples")  # never a pass


def test_no_metrics_leaves_the_decision_to_the_other_gates():
    gated = AnalysisSpec(benchmarks=[{"name": "medical-qa"}])
    outcome = online_outcome(gated, ArmSamples(), ArmSamples())
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "NoOnlineMetrics")


ACTION = ObserveCanary(CHAMPION, CANDIDATE, 0, "2026-11-29T06:00:00.000Z", "2026-11-29T06:00:30.000Z")


def _canary_outcome(tmp_path, metrics: list[dict], before: Counts, after: Counts):
    """The step's outcome after a baseline scrape `before` and a later one `after`, as both shells sample."""
    resource = deployment(analysis={"benchmarks": [{"name": "medical-qa"}], "metrics": metrics})
    sampler = CanarySampler(RecordingStore(tmp_path))
    sampler.sample(resource, ACTION, lambda: {"medical": before}, NOW)
    sample = sampler.sample(resource, ACTION, lambda: {"medical": after}, NOW)
    return sample.result.outcome, sample.result.candidate_requests


def test_while_baking_the_previous_champions_arm_is_its_answers_to_mirrored_requests(tmp_path) -> None:
    """The bake compares the new champion's client answers with the previous one's shadow answers;
    outside the bake, shadow answers never count for anyone."""
    previous, promoted = CHAMPION, CANDIDATE
    baking = ObserveCanary(
        previous, promoted, 2, "2026-11-29T06:00:00.000Z", "2026-11-29T06:05:00.000Z", mirrored=previous
    )
    metrics = [{"name": "errors", "kind": "errorRate"}]
    resource = deployment(analysis={"benchmarks": [{"name": "medical-qa"}], "metrics": metrics})
    ingress = FakeIngress()

    def read() -> dict[str, Counts]:
        return {"medical": ingress.counts()}

    sampler = CanarySampler(RecordingStore(tmp_path))
    sampler.sample(resource, baking, read, NOW)
    for index in range(400):
        ingress.answer(promoted, 0.05, code="500" if index % 4 == 0 else "200")  # a 25 % error rate
        ingress.answer(previous, 0.05, endpoint="shadow")  # its mirrored copy, answered without error
    sample = sampler.sample(resource, baking, read, NOW)
    assert sample.result is not None and sample.result.outcome.verdict == Verdict.REJECT, sample
    assert sample.result.candidate_requests == 400
    assert window_samples(Counts(), ingress.counts(), previous).requests == 0, "not client traffic"


def test_a_bake_on_schema_validity_compares_the_previous_champions_mirrored_structured_answers(
    tmp_path,
) -> None:
    """Mirrored structured answers are the previous champion's validity arm, never its client traffic
    (they were counted as client answers once, so a bake on validity never saw its arm)."""
    previous, promoted = CHAMPION, CANDIDATE
    baking = ObserveCanary(
        previous, promoted, 2, "2026-11-29T06:00:00.000Z", "2026-11-29T06:05:00.000Z", mirrored=previous
    )
    resource = deployment(analysis={"metrics": [{"name": "schema", "kind": "validity"}]})
    ingress = FakeIngress()

    def read() -> dict[str, Counts]:
        return {"medical": ingress.counts()}

    sampler = CanarySampler(RecordingStore(tmp_path))
    sampler.sample(resource, baking, read, NOW)
    for index in range(100):
        ingress.answer(promoted, 0.05, valid=index % 2 == 0)  # half its structured answers cut short
        ingress.answer(previous, 0.05, endpoint="shadow", valid=True)
    sample = sampler.sample(resource, baking, read, NOW)
    assert sample.result is not None and sample.result.outcome.verdict == Verdict.REJECT, sample
    (evidence,) = sample.result.outcome.evidence
    assert (evidence.n_champion, evidence.n_candidate) == (100, 100)
    arm = window_samples(Counts(), ingress.counts(), previous)
    assert (arm.requests, arm.structured) == (0, 0), "mirrored answers are not client traffic"


def test_every_counter_of_the_data_plane_says_which_endpoint_answered(monkeypatch) -> None:
    """The ingress's own collectors: a mirrored answer counts as one, under the mirrored key alone
    (its schema validity too, which the bake on validity compares)."""
    from baton_serving import metrics
    from baton_serving.wire import SHADOW_ENDPOINT

    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    labels = {"pool": "p", "deployment": "contract", "revision": "medical-v1", "endpoint": SHADOW_ENDPOINT}
    metrics.REQUESTS.labels(**labels, code="200").inc()
    metrics.REQUEST_DURATION.labels(**labels).observe(0.05)
    metrics.STRUCTURED_OUTPUTS.labels(**labels, valid="true").inc()
    counts = parse_exposition(metrics.exposition().decode())["contract"]
    arm = counts.arm(mirrored_answers("medical-v1"))
    assert (arm.requests, arm.latency.n, arm.structured, arm.valid) == (1, 1, 1, 1)
    assert counts.arm("medical-v1") == ArmSamples()


def test_online_error_rate_breach_rejects_and_counts_requests_since_the_step_began(tmp_path) -> None:
    metric = [{"name": "errors", "kind": "errorRate", "maxValue": 0.05}]
    before = Counts(requests={CHAMPION: 1000, CANDIDATE: 100}, errors={CHAMPION: 3, CANDIDATE: 0})

    def after(candidate_errors: int) -> Counts:
        return Counts(
            requests={CHAMPION: 1400, CANDIDATE: 500}, errors={CHAMPION: 3, CANDIDATE: candidate_errors}
        )

    outcome, requests = _canary_outcome(tmp_path, metric, before, after(40))
    assert (outcome.verdict, outcome.reason, requests) == (Verdict.REJECT, "CanaryWorse", 400)
    # no error on either side, minSamples per arm: the guardrail holds (the offline gate showed "better")
    outcome, _ = _canary_outcome(tmp_path, metric, before, after(0))
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "NoRegression")


def test_online_latency_is_judged_on_the_histogram_buckets_of_both_arms(tmp_path) -> None:
    fast = {0.1: 300.0, 0.25: 390.0, 0.5: 400.0, math.inf: 400.0}
    slow = {0.1: 0.0, 0.25: 10.0, 0.5: 100.0, 1.0: 300.0, 2.5: 400.0, math.inf: 400.0}
    metric = [{"name": "latency", "kind": "latency", "maxValue": 1.0}]
    requests = {CHAMPION: 400.0, CANDIDATE: 400.0}
    for candidate, verdict in ((fast, Verdict.PROMOTE), (slow, Verdict.REJECT)):
        after = Counts(requests=requests, latency_buckets={CHAMPION: fast, CANDIDATE: candidate})
        outcome, _ = _canary_outcome(tmp_path, metric, Counts(), after)
        assert outcome.verdict == verdict, outcome


def test_online_gate_fails_closed_without_data_or_without_prometheus(tmp_path) -> None:
    nothing = Counts()
    outcome, requests = _canary_outcome(
        tmp_path, [{"name": "errors", "kind": "errorRate", "maxValue": 0.05}], nothing, nothing
    )
    assert (outcome.verdict, requests) == (Verdict.CONTINUE, 0)  # never a pass without samples
    prometheus = [{"name": "ttft", "kind": "latency", "provider": "prometheus", "query": "x", "maxValue": 1}]
    outcome, _ = _canary_outcome(tmp_path, prometheus, nothing, nothing)
    assert outcome.verdict == Verdict.INCONCLUSIVE
    outcome, _ = _canary_outcome(tmp_path, [], nothing, nothing)
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "NoOnlineMetrics")


@pytest.mark.parametrize(
    ("previous", "started", "finished", "delay"),
    [
        (None, 0.0, 0.1, CANARY_SAMPLE_INTERVAL_S),  # mid-step: the regular cadence
        (7.0, 9.0, 9.1, 0.9),  # the pause ends before the next regular sample: look at its end
        (7.0, 9.9, 10.2, 0.0),  # began before the end, finished after it: a closing sample is due now
        (9.9, 10.0, 10.1, 0.0),  # the closing sample is in: the step's verdict can be taken now
        (None, 10.5, 10.6, 0.0),  # the same, when the step's first sample is its closing one
        (10.0, 12.0, 12.1, CANARY_SAMPLE_INTERVAL_S),  # still undecided after the end: more traffic needed
    ],
)
def test_canary_samples_keep_a_cadence_and_close_the_step_at_once(previous, started, finished, delay) -> None:
    def at(seconds: float | None) -> datetime | None:
        return None if seconds is None else NOW + timedelta(seconds=seconds)

    assert next_sample_delay(at(previous), at(started), at(finished), at(10)) == pytest.approx(delay)
