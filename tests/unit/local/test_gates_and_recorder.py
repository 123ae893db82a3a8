"""The local shell judges canary windows on the data plane's own metrics, with the analysis core's tests."""

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from baton.analysis.gates import ArmSamples, online_outcome
from baton.api import AnalysisSpec, Verdict
from baton.local.recorder import MetricsRecorder

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

    def answer(
        self, revision: str, seconds: float, code: str = "200", endpoint: str = "chat_completions"
    ) -> None:
        self.requests.labels("p", "medical", revision, endpoint, code).inc()
        if code != "200":
            self.errors.labels("p", "medical", revision, endpoint, "server_error").inc()
        self.duration.labels("p", "medical", revision, endpoint).observe(seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_only_requests_after_the_window_opened_count_for_it():
    ingress, recorder = FakeIngress(), MetricsRecorder()
    for _ in range(5):
        ingress.answer("medical-v2", 0.05)
    recorder.ingest(ingress.text())
    recorder.windows["medical"] = "step-0"
    for _ in range(3):
        ingress.answer("medical-v2", 0.3)
    ingress.answer("medical-v2", 0.7, code="500")
    ingress.answer("medical-v2", 0.3, endpoint="shadow")
    recorder.ingest(ingress.text())
    recorder.ingest(ingress.text())  # an unchanged scrape adds nothing
    window = recorder.samples("medical", "medical-v2", "step-0")
    assert (window.requests, window.errors) == (4, 1)
    assert window.latency.n == 4
    assert window.latency.mean == pytest.approx((3 * 0.3 + 0.75) / 4), "bucket midpoints"
    assert recorder.samples("medical", "medical-v2", "-").requests == 5


def test_a_reset_counter_counts_again_from_zero():
    recorder = MetricsRecorder()
    first = FakeIngress()
    for _ in range(4):
        first.answer("medical-v1", 0.05)
    recorder.ingest(first.text())
    restarted = FakeIngress()
    restarted.answer("medical-v1", 0.05)
    recorder.ingest(restarted.text())
    assert recorder.samples("medical", "medical-v1", "-").requests == 5


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
