"""Grafana dashboards for baton, built with grafana-foundation-sdk instead of hand-edited JSON.

Two dashboards: a platform overview (every pool and domain at a glance) and a rollout view of
one deployment (traffic weight over time, latency and errors per revision, benchmark scores,
decisions as annotations). `baton generate` writes them into the Helm chart, which ships them as
ConfigMaps for Grafana's sidecar. The PromQL here may name only metrics that the data plane and
the operator really export; a test checks that against a live scrape.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

from baton.observability.alerts import OPERATOR_JOB

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["baton"]
# Grafana's $__rate_interval adapts the window to the scrape interval and the zoom level.
RATE = "$__rate_interval"


def _query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend)


def _timeseries(
    title: str, description: str, unit: str, queries: list[prometheus.Dataquery], *, width: int = 12
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    for ref_id, query in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(query.ref_id(ref_id))
    return panel


def _stat(title: str, description: str, unit: str, query: prometheus.Dataquery) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(6)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        .with_target(query.ref_id("A"))
    )


def _datasource_variable() -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def _label_variable(name: str, label: str, metric: str, *, multi: bool) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )


def _quantile(metric: str, quantile: float, selector: str, by: str) -> str:
    return f"histogram_quantile({quantile}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


def _error_ratio(selector: str, by: str) -> str:
    """Server errors (HTTP 5xx) over all requests: the error SLO's ratio, not the client's 4xx mistakes.

    Without a single 5xx the numerator has no series; `or ... * 0` makes the ratio 0 instead of absent.
    """
    requests = f"sum by ({by}) (rate(baton_requests_total{{{selector}}}[{RATE}]))"
    return (
        f'(sum by ({by}) (rate(baton_requests_total{{{selector}, code=~"5.."}}[{RATE}])) or {requests} * 0)'
        f" / {requests}"
    )


def platform_overview() -> dict[str, Any]:
    """All pools and domains: traffic, errors, latency, tokens, and where each rollout stands."""
    scope = 'pool=~"$pool", deployment=~"$deployment"'
    builder = (
        dashboard.Dashboard("baton / platform overview")
        .uid("baton-overview")
        .description("Every pool and domain endpoint baton serves: traffic, errors, latency and rollouts.")
        .tags(TAGS)
        .refresh("30s")
        .time("now-3h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(_datasource_variable())
        .with_variable(_label_variable("pool", "Pool", "baton_requests_total", multi=True))
        .with_variable(
            _label_variable("deployment", "Deployment", 'baton_requests_total{pool=~"$pool"}', multi=True)
        )
        .with_row(dashboard.Row("At a glance"))
        .with_panel(
            _stat(
                "Requests/s",
                "All requests to the selected endpoints.",
                "reqps",
                _query(f"sum(rate(baton_requests_total{{{scope}}}[{RATE}]))", "requests/s"),
            )
        )
        .with_panel(
            _stat(
                "Error ratio",
                "Server errors (HTTP 5xx) over all requests.",
                "percentunit",
                _query(_error_ratio(scope, ""), "errors"),
            )
        )
        .with_panel(
            _stat(
                "Time to first token p95",
                "95th percentile over the selected endpoints.",
                "s",
                _query(
                    f"histogram_quantile(0.95, sum by (le) "
                    f"(rate(baton_time_to_first_token_seconds_bucket{{{scope}}}[{RATE}])))",
                    "p95",
                ),
            )
        )
        .with_panel(
            _stat(
                "Rollouts in progress",
                "Deployments with a candidate under evaluation.",
                "none",
                _query(
                    'count(baton_rollout_canary_weight{deployment=~"$deployment"} > 0) or vector(0)',
                    "rollouts",
                ),
            )
        )
        .with_row(dashboard.Row("Traffic and errors"))
        .with_panel(
            _timeseries(
                "Requests/s by deployment",
                "Request rate per domain endpoint.",
                "reqps",
                [
                    _query(
                        f"sum by (deployment) (rate(baton_requests_total{{{scope}}}[{RATE}]))",
                        "{{deployment}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Error ratio by deployment",
                "Server errors (HTTP 5xx) over all requests, per endpoint.",
                "percentunit",
                [_query(_error_ratio(scope, "deployment"), "{{deployment}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Failures by type",
                "Failed requests by OpenAI error type, including client mistakes (4xx).",
                "reqps",
                [
                    _query(
                        f"sum by (deployment, type) (rate(baton_request_errors_total{{{scope}}}[{RATE}]))",
                        "{{deployment}}: {{type}}",
                    )
                ],
                width=24,
            )
        )
        .with_row(dashboard.Row("Latency and throughput"))
        .with_panel(
            _timeseries(
                "Time to first token p95 by deployment",
                "How long a client waits for the first token.",
                "s",
                [
                    _query(
                        _quantile("baton_time_to_first_token_seconds", 0.95, scope, "deployment"),
                        "{{deployment}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Time per output token p95 by deployment",
                "Decoding speed of the answers, streamed or not.",
                "s",
                [
                    _query(
                        _quantile("baton_time_per_output_token_seconds", 0.95, scope, "deployment"),
                        "{{deployment}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Output tokens/s by pool",
                "Generated tokens per second, per Ray Serve pool.",
                "short",
                [_query(f"sum by (pool) (rate(baton_output_tokens_total{{{scope}}}[{RATE}]))", "{{pool}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Requests in flight by pool",
                "Requests being answered right now; a growing queue means the pool is saturated.",
                "short",
                [_query(f"sum by (pool) (baton_requests_in_flight{{{scope}}})", "{{pool}}")],
            )
        )
        .with_row(dashboard.Row("Rollouts"))
        .with_panel(
            _timeseries(
                "Candidate traffic weight",
                "Percent of live traffic on each deployment's candidate.",
                "percent",
                [_query('baton_rollout_canary_weight{deployment=~"$deployment"}', "{{deployment}}")],
                width=24,
            )
        )
        .with_panel(_phase_timeline('deployment=~"$deployment"', width=24))
        .with_row(dashboard.Row("Operator"))
        .with_panel(
            _timeseries(
                "Operator up",
                "1 while a baton-operator target answers scrapes; replicas beyond the leader are standbys.",
                "none",
                [_query(f'sum(up{{job="{OPERATOR_JOB}"}})', "operator targets up")],
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "Reconciles/s by kind",
                "How often the operator reconciles deployments and pools.",
                "ops",
                [_query(f"sum by (kind) (rate(baton_operator_reconciles_total[{RATE}]))", "{{kind}}")],
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                "API writes/s by resource",
                "Writes to the Kubernetes API: status patches, owned RayServices, Events, the Lease.",
                "ops",
                [
                    _query(
                        f"sum by (resource) (rate(baton_operator_api_writes_total[{RATE}]))", "{{resource}}"
                    )
                ],
                width=8,
            )
        )
    )
    return _encode(builder)


def _phase_timeline(selector: str, *, width: int) -> statetimeline.Panel:
    return (
        statetimeline.Panel()
        .title("Rollout phase")
        .description("Phase of each deployment's rollout over time.")
        .datasource(DATASOURCE)
        .height(6)
        .span(width)
        .show_value(common.VisibilityMode.AUTO)
        .merge_values(True)
        .with_target(
            _query(f"baton_rollout_phase{{{selector}}} == 1", "{{deployment}}: {{phase}}").ref_id("A")
        )
    )


def _quantiles_by_revision(title: str, metric: str) -> timeseries.Panel:
    scope = 'deployment="$deployment"'
    return _timeseries(
        title,
        "p50 and p95 per revision.",
        "s",
        [
            _query(_quantile(metric, q, scope, "revision"), f"{{{{revision}}}} p{round(q * 100)}")
            for q in (0.5, 0.95)
        ],
    )


def rollout_view() -> dict[str, Any]:
    """One deployment's rollout: weight over time, per-revision latency and errors, scores, decisions."""
    scope = 'deployment="$deployment"'
    builder = (
        dashboard.Dashboard("baton / rollout")
        .uid("baton-rollout")
        .description("One domain endpoint's rollout: champion versus candidate, and every decision.")
        .tags(TAGS)
        .refresh("30s")
        .time("now-3h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(_datasource_variable())
        .with_variable(_label_variable("deployment", "Deployment", "baton_requests_total", multi=False))
        .annotation(
            dashboard.AnnotationQuery()
            .name("Decisions")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("purple")
            .expr(f"increase(baton_rollout_decisions_total{{{scope}}}[2m]) > 0")
        )
        .with_row(dashboard.Row("Traffic split"))
        .with_panel(
            _timeseries(
                "Candidate traffic weight",
                "Percent of live traffic the router sends to the candidate; decisions are annotations.",
                "percent",
                [_query(f"baton_rollout_canary_weight{{{scope}}}", "candidate weight")],
            )
        )
        .with_panel(
            _timeseries(
                "Requests/s by revision",
                "What the router actually sent to each revision.",
                "reqps",
                [
                    _query(
                        f"sum by (revision) (rate(baton_requests_total{{{scope}}}[{RATE}]))", "{{revision}}"
                    )
                ],
            )
        )
        .with_panel(_phase_timeline(scope, width=24))
        .with_row(dashboard.Row("Champion versus candidate"))
        .with_panel(
            _quantiles_by_revision("Time to first token by revision", "baton_time_to_first_token_seconds")
        )
        .with_panel(
            _quantiles_by_revision("Time per output token by revision", "baton_time_per_output_token_seconds")
        )
        .with_panel(
            _timeseries(
                "Error ratio by revision",
                "Server errors (HTTP 5xx) over all requests, per revision.",
                "percentunit",
                [_query(_error_ratio(scope, "revision"), "{{revision}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Output tokens/s by revision",
                "Generated tokens per second, per revision.",
                "short",
                [
                    _query(
                        f"sum by (revision) (rate(baton_output_tokens_total{{{scope}}}[{RATE}]))",
                        "{{revision}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Structured-output validity by revision",
                "Share of JSON-schema answers that parse and validate against the schema.",
                "percentunit",
                [
                    _query(
                        f"sum by (revision) (rate(baton_structured_outputs_total"
                        f'{{{scope}, valid="true"}}[{RATE}]))'
                        f" / sum by (revision) (rate(baton_structured_outputs_total{{{scope}}}[{RATE}]))",
                        "{{revision}}",
                    )
                ],
            )
        )
        .with_panel(
            _timeseries(
                "Revision ready",
                "1 once the revision's engine loaded its verified artifact; 0 while loading or refused.",
                "none",
                [_query(f"max by (revision) (baton_revision_ready{{{scope}}})", "{{revision}}")],
            )
        )
        .with_panel(
            _timeseries(
                "Engine slots",
                "Slots of an engine replica decoding a request, of its slots in all, and requests "
                "waiting for one in llama-server (sampled every 5 s); restarts of its llama-server.",
                "none",
                [
                    _query(f"max by (revision) (baton_engine_slots_busy{{{scope}}})", "{{revision}} busy"),
                    _query(f"max by (revision) (baton_engine_slots{{{scope}}})", "{{revision}} slots"),
                    _query(f"max by (revision) (baton_engine_queue_depth{{{scope}}})", "{{revision}} queued"),
                    _query(f"max by (revision) (baton_engine_restarts{{{scope}}})", "{{revision}} restarts"),
                ],
            )
        )
        .with_row(dashboard.Row("Evidence"))
        .with_panel(
            _timeseries(
                "Benchmark scores",
                "Mean per-item score of champion and candidate on each benchmark of the offline gate.",
                "percentunit",
                [_query(f"baton_benchmark_score{{{scope}}}", "{{candidate}} {{arm}} / {{benchmark}}")],
                width=24,
            )
        )
    )
    return _encode(builder)


def _encode(builder: dashboard.Dashboard) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for annotation in document.get("annotations", {}).get("list", []):
        if annotation["name"] == "Decisions":
            # Grafana's Prometheus annotation options the SDK's AnnotationQuery does not model.
            annotation |= {
                "titleFormat": "{{verdict}} ({{gate}} gate)",
                "tagKeys": "verdict,gate",
                "step": "1m",
            }
    return document


def render_all() -> dict[str, str]:
    """File name → JSON text of every dashboard (deterministic, so a test can diff it)."""
    return {
        f"{name}.json": json.dumps(document, indent=2, sort_keys=True) + "\n"
        for name, document in (("overview", platform_overview()), ("rollout", rollout_view()))
    }
