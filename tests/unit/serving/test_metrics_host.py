"""Which node a scrape was addressed to, from its Host header (the ingress answers another Ray node's
target with no series: `OpenAIIngress.prometheus_metrics`)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from baton_serving.metrics import host_address

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("10.244.0.7:8000", "10.244.0.7"),
        ("10.244.0.7", "10.244.0.7"),
        ("[fd00::7]:8000", "fd00::7"),
        ("127.0.0.1:8000", "127.0.0.1"),
    ],
)
def test_an_address_in_the_host_header_is_read(host: str, address: str) -> None:
    assert host_address(host) == ip_address(address)


@pytest.mark.parametrize(
    "host",
    [None, "", "cpu-serve-svc.ns.svc:8000", "localhost:8000", "[fd00::7", "300.1.1.1"],
)
def test_a_name_or_a_malformed_header_names_no_address(host: str | None) -> None:
    assert host_address(host) is None
