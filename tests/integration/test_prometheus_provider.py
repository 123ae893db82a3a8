"""The Prometheus provider against a real Prometheus scraping a real exporter on loopback.

The exporter is a `prometheus_client` HTTP server publishing per-revision request and error
counters and a time-to-first-token histogram, as the data plane does; Prometheus (Debian package,
from the test bed) scrapes it every second; one server serves the whole module. Gates fed by the
provider must treat an empty result as no data, never as a pass. The canary sampler both shells
share (`baton.evidence.samples.CanarySampler`) is run against it, for relative bounds read on
both arms at one instant.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from baton.analysis.measurements import Measurement
from baton.analysis.sanity import threshold_gate
from baton.api.decision import Verdict
from baton.evidence.providers.prometheus import InstantQuery, PrometheusProvider, render_query
from baton.evidence.samples import CanarySampler
from baton.rollout import ObserveCanary
from tests.testbed.binaries import MissingBinaryError
from tests.testbed.processes import StartupError
from tests.testbed.prometheus import Prometheus
from tests.unit.evidence.stores import RecordingStore
from tests.unit.rollout.helpers import deployment

pytestmark = pytest.mark.integration

SCRAPE_WAIT_S = 90.0


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    registry = CollectorRegistry()
    requests = Counter("baton_requests", "Requests answered.", ["deployment", "revision"], registry=registry)
    errors = Counter(
        "baton_request_errors", "Requests failed.", ["deployment", "revision"], registry=registry
    )
    requests.labels("medical", "v1").inc(1000)
    errors.labels("medical", "v1").inc(5)
    requests.labels("medical", "v2").inc(400)
    errors.labels("medical", "v2").inc(20)
    ttft = Histogram(
        "baton_time_to_first_token_seconds",
        "Time to first token.",
        ["deployment", "revision"],
        buckets=(0.1, 0.2, 0.4, 0.8, 1.6),
        registry=registry,
    )
    # v1 answers in about 0.15 s, v3 in about 0.3 s (2x slower), v4 about as fast as v1
    for revision, seconds in (("v1", 0.15), ("v3", 0.3), ("v4", 0.16)):
        for _ in range(100):
            ttft.labels("medical", revision).observe(seconds)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def provider(exporter: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusProvider]:
    """One real Prometheus for the module (the test bed's `prometheus` fixture starts one per test)."""
    server = Prometheus([exporter], workdir=tmp_path_factory.mktemp("prometheus"))
    try:
        server.start()
    except (MissingBinaryError, StartupError) as error:
        pytest.fail(f"prometheus did not start: {error}", pytrace=False)
    try:
        provider = PrometheusProvider(server.url)
        deadline = time.monotonic() + SCRAPE_WAIT_S
        while provider.query('sum(baton_requests_total{revision="v2"})').value is None:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Prometheus at {server.url} did not scrape {exporter} within {SCRAPE_WAIT_S:.0f} s"
                )
            time.sleep(0.5)
        yield provider
    finally:
        server.stop(remove_workdir=False)


def error_rate(revision: str) -> str:
    return (
        f'sum(baton_request_errors_total{{deployment="medical",revision="{revision}"}})'
        f' / sum(baton_requests_total{{deployment="medical",revision="{revision}"}})'
    )


def test_is_online(provider: PrometheusProvider) -> None:
    assert provider.is_online()


def test_scalar_reading_of_a_real_series(provider: PrometheusProvider) -> None:
    reading = provider.query(error_rate("v2"))
    assert reading.error is None
    assert reading.value == pytest.approx(0.05)
    assert provider.query("scalar(sum(baton_requests_total))").value == pytest.approx(1400)


def test_a_deployment_metric_template_is_filled_per_revision(provider: PrometheusProvider) -> None:
    template = (
        'sum(baton_request_errors_total{deployment="{{deployment}}",revision="{{revision}}"})'
        ' / sum(baton_requests_total{deployment="{{deployment}}",revision="{{revision}}"})'
    )
    assert render_query(template, deployment="medical", revision="v1") == error_rate("v1")
    assert provider.query(render_query(template, deployment="medical", revision="v1")).value == pytest.approx(
        0.005
    )
    with pytest.raises(ValueError, match="revision"):
        render_query(template, deployment="medical", revision='v1"} or vector(1) #')


def test_slo_gate_on_real_readings(provider: PrometheusProvider) -> None:
    assert (
        threshold_gate("error-rate", provider.query(error_rate("v1")), max_value=0.01).verdict
        == Verdict.PROMOTE
    )
    rejected = threshold_gate("error-rate", provider.query(error_rate("v2")), max_value=0.01)
    assert rejected.verdict == Verdict.REJECT
    assert rejected.evidence[0].threshold == 0.01


def test_empty_result_is_no_data_and_never_a_pass(provider: PrometheusProvider) -> None:
    reading = provider.query(error_rate("v3-never-deployed"))
    assert reading == Measurement(query=error_rate("v3-never-deployed"), value=None)
    outcome = threshold_gate("error-rate", reading, max_value=0.01)
    assert outcome.verdict == Verdict.INCONCLUSIVE
    assert outcome.reason == "NoData"


def test_several_series_are_refused(provider: PrometheusProvider) -> None:
    reading = provider.query("baton_requests_total")
    assert reading.value is None
    assert reading.error is not None and "2 series" in reading.error


def test_bad_promql_is_an_error(provider: PrometheusProvider) -> None:
    reading = provider.query("sum(baton_requests_total{")
    assert reading.value is None
    assert reading.error is not None and "HTTP 400" in reading.error
    assert threshold_gate("error-rate", reading, max_value=0.01).reason == "MeasurementFailed"


def test_unreachable_prometheus_is_offline_and_an_error() -> None:
    provider = PrometheusProvider("http://127.0.0.1:9", timeout_s=2)
    assert not provider.is_online()
    reading = provider.query("up")
    assert reading.value is None
    assert reading.error is not None and reading.error.startswith("Prometheus unreachable")


P95_TTFT = (
    "histogram_quantile(0.95, sum by (le) "
    '(baton_time_to_first_token_seconds_bucket{deployment="{{deployment}}",revision="{{revision}}"}))'
)


def canary_outcome(tmp_path: Path, prometheus_url: str, candidate: str, **bounds: float):
    """One look of the shared canary sampler at a step comparing `candidate` with v1 on p95 TTFT."""
    metric = {"name": "ttft", "kind": "latency", "provider": "prometheus", "query": P95_TTFT, **bounds}
    resource = deployment(analysis={"benchmarks": [{"name": "medical-qa"}], "metrics": [metric]})
    action = ObserveCanary("v1", candidate, 0, "2026-12-02T00:00:00.000Z", "2026-12-02T00:05:00.000Z")
    sampler = CanarySampler(RecordingStore(tmp_path), prometheus_url)
    sample = sampler.sample(resource, action, dict, datetime.now(UTC))
    assert sample.result is not None, sample.failure
    return sample.result.outcome


def test_a_candidate_slower_than_the_champion_by_more_than_the_tolerance_is_rejected(
    provider: PrometheusProvider, tmp_path: Path
) -> None:
    slower = canary_outcome(tmp_path, provider.url, "v3", tolerance=0.25)
    assert (slower.verdict, slower.reason) == (Verdict.REJECT, "RelativeBoundBreached"), slower.message
    (evidence,) = slower.evidence
    # p95 read from the buckets: v1's in (0.1, 0.2], v3's in (0.2, 0.4]
    assert evidence.value is not None and 0.2 < evidence.value <= 0.4
    assert evidence.threshold is not None and 0.1 * 1.25 < evidence.threshold <= 0.2 * 1.25
    # the same slow candidate is within a fixed 2 s bound: only the champion comparison catches it
    assert canary_outcome(tmp_path, provider.url, "v3", maxValue=2.0).verdict == Verdict.PROMOTE
    both = canary_outcome(tmp_path, provider.url, "v3", maxValue=2.0, tolerance=0.25)
    assert (both.verdict, both.reason) == (Verdict.REJECT, "RelativeBoundBreached")


def test_a_candidate_as_fast_as_the_champion_is_within_the_tolerance(
    provider: PrometheusProvider, tmp_path: Path
) -> None:
    outcome = canary_outcome(tmp_path, provider.url, "v4", tolerance=0.25, maxValue=2.0)
    assert (outcome.verdict, outcome.reason) == (Verdict.PROMOTE, "WithinThreshold"), outcome.message
    assert {evidence.test for evidence in outcome.evidence} >= {"relative-threshold"}


def test_a_candidate_with_no_series_is_inconclusive_not_compared(
    provider: PrometheusProvider, tmp_path: Path
) -> None:
    outcome = canary_outcome(tmp_path, provider.url, "v9-never-deployed", tolerance=0.25)
    assert (outcome.verdict, outcome.reason) == (Verdict.INCONCLUSIVE, "NoData")


def test_both_arms_are_read_at_the_instant_asked_for(provider: PrometheusProvider) -> None:
    query = render_query(P95_TTFT, deployment="medical", revision="v1")
    assert provider.query(InstantQuery(query, time.time())).value is not None
    # an hour ago nothing was scraped yet: the instant is honoured, and its emptiness is no data
    assert provider.query(InstantQuery(query, time.time() - 3600)) == Measurement(query, None)


def test_an_unreachable_or_missing_prometheus_is_inconclusive_in_the_shared_sampler(tmp_path: Path) -> None:
    unreachable = canary_outcome(tmp_path, "http://127.0.0.1:9", "v3", tolerance=0.25)
    assert (unreachable.verdict, unreachable.reason) == (Verdict.INCONCLUSIVE, "MeasurementFailed")
    assert "Prometheus unreachable" in unreachable.message
    metric = {
        "name": "ttft",
        "kind": "latency",
        "provider": "prometheus",
        "query": P95_TTFT,
        "tolerance": 0.2,
    }
    resource = deployment(analysis={"benchmarks": [{"name": "medical-qa"}], "metrics": [metric]})
    action = ObserveCanary("v1", "v3", 0, "2026-12-02T00:00:00.000Z", "2026-12-02T00:05:00.000Z")
    sample = CanarySampler(RecordingStore(tmp_path)).sample(resource, action, dict, datetime.now(UTC))
    assert sample.result is not None
    assert sample.result.outcome.verdict == Verdict.INCONCLUSIVE
    assert "no Prometheus URL is configured" in sample.result.outcome.message
