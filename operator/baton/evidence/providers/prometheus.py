"""Prometheus provider: one PromQL query over HTTP, one scalar back.

An empty result is "no data", never zero and never a pass (Kayenta passes a metric with no data;
baton's sanity gate turns `value=None` into `Inconclusive`). A query that returns several series
is refused rather than silently picking one: aggregate it in PromQL (`sum(...)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx

from baton.analysis.measurements import Measurement


def render_query(template: str, *, deployment: str, revision: str) -> str:
    """Fill a ModelDeployment metric's `query` template (`{{deployment}}`, `{{revision}}`) for one arm."""
    for name, value in (("deployment", deployment), ("revision", revision)):
        if '"' in value or "\\" in value:
            raise ValueError(f"{name} {value!r} cannot be placed in a PromQL label matcher")
    return template.replace("{{deployment}}", deployment).replace("{{revision}}", revision)


@dataclass(frozen=True)
class InstantQuery:
    """PromQL evaluated at `at` (Unix seconds), or now: arms read at one instant share every range."""

    expr: str
    at: float | None = None


class PrometheusProvider:
    """Instant queries against a Prometheus server's HTTP API (`/api/v1/query`)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def is_online(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=self.timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, query: InstantQuery | str) -> Measurement:
        """One instant query (a plain string is evaluated now); failures are in the result."""
        instant = query if isinstance(query, InstantQuery) else InstantQuery(query)
        expr = instant.expr
        params = {"query": expr} if instant.at is None else {"query": expr, "time": f"{instant.at:.3f}"}
        try:
            response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=self.timeout_s)
        except httpx.HTTPError as error:
            return Measurement(
                query=expr, value=None, error=f"Prometheus unreachable: {type(error).__name__}: {error}"
            )
        try:
            body = response.json()
        except ValueError:
            return Measurement(
                query=expr, value=None, error=f"Prometheus answered HTTP {response.status_code}, not JSON"
            )
        if response.status_code != 200 or body.get("status") != "success":
            detail = body.get("error", "") if isinstance(body, dict) else ""
            return Measurement(
                query=expr, value=None, error=f"Prometheus answered HTTP {response.status_code}: {detail}"
            )
        return _measurement(expr, body.get("data", {}))


def _measurement(query: str, data: dict) -> Measurement:
    result_type, result = data.get("resultType"), data.get("result")
    if result_type == "scalar":
        return Measurement(query=query, value=_number(result[1]))
    if result_type != "vector":
        return Measurement(
            query=query, value=None, error=f"expected an instant vector or scalar, got {result_type}"
        )
    if not result:
        return Measurement(query=query, value=None)
    if len(result) > 1:
        return Measurement(
            query=query,
            value=None,
            error=f"query returned {len(result)} series; aggregate it to one (e.g. sum(...))",
        )
    return Measurement(query=query, value=_number(result[0]["value"][1]))


def _number(text: str) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value
