"""The Prometheus provider against a real Prometheus scraping a real exporter on loopback.

The exporter is a `prometheus_client` HTTP server publishing per-revision request and error
counters, as the data plane does; Prometheus (Debian package, from the test bed) scrapes it every
second; one server serves the whole module. Gates fed by the provider must treat an empty
result as no data, never as a pass.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from baton.analysis.measurements import Measurement
from baton.analysis.sanity import threshold_gate
from baton.api.decision import Verdict
from baton.evidence.providers.prometheus import PrometheusProvider, render_query
from tests.testbed.binaries import MissingBinaryError
from tests.testbed.processes import StartupError
from tests.testbed.prometheus import Prometheus

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
