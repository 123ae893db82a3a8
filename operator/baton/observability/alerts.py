"""Prometheus alerting rules for baton, generated from code so thresholds are stated once.

Five alerts, each unit-tested with `promtool test rules`: a rollout stuck, repeated rejections
of a deployment's candidates, error-budget and latency-budget burn (multi-window, multi-burn-rate,
as in the Google SRE workbook) and the operator down. `baton generate` writes the groups into the
Helm chart, where a PrometheusRule carries them; the same file is what promtool tests.
"""

from __future__ import annotations

from typing import Any

from baton.observability.yamltext import dump_readable

# Service-level objectives of every domain endpoint.
AVAILABILITY_OBJECTIVE = 0.99  # share of requests answered without a server error (HTTP 5xx)
TTFT_THRESHOLD_SECONDS = 1  # a client should see (or could have seen) its first token within this...
TTFT_OBJECTIVE = 0.95  # ...for this share of answers, streamed or not

# Multi-window burn-rate alerts: (severity, long window, short window, burn rate, for).
# A burn rate of 14.4 spends 2 % of a 30-day budget in an hour (page); 6 spends 5 % in 6 hours.
BURN_WINDOWS = (
    ("critical", "1h", "5m", 14.4, "2m"),
    ("warning", "6h", "30m", 6.0, "15m"),
)
RATIO_WINDOWS = ("5m", "30m", "1h", "6h")

ROLLOUT_STUCK_AFTER = "1h"  # no change of phase or weight for this long while a rollout is in flight
REJECTIONS_WINDOW = "24h"
REJECTIONS_THRESHOLD = 3
OPERATOR_JOB = "baton-operator"  # the chart's ServiceMonitor sets this job label
IN_FLIGHT_PHASES = "Pending|Benchmarking|Canary|Promoting|RollingBack"

BY = "pool, deployment"
# prometheus_client writes bucket bounds as floats ("1.0"); Prometheus 3 normalises them to "1".
_TTFT_BUCKET = f'le=~"{TTFT_THRESHOLD_SECONDS}(\\\\.0)?"'


def _error_ratio(window: str) -> str:
    # `or ... * 0`: without a single 5xx the numerator has no series, and the ratio must be 0, not absent.
    all_requests = f"sum by ({BY}) (rate(baton_requests_total[{window}]))"
    return (
        f'(\n  sum by ({BY}) (rate(baton_requests_total{{code=~"5.."}}[{window}]))\n'
        f"  or\n  {all_requests} * 0\n)\n/\n{all_requests}"
    )


def _slow_ttft_ratio(window: str) -> str:
    metric = "baton_time_to_first_token_seconds"
    return (
        f"1 - (\n  sum by ({BY}) (rate({metric}_bucket{{{_TTFT_BUCKET}}}[{window}]))\n"
        f"  /\n  sum by ({BY}) (rate({metric}_count[{window}]))\n)"
    )


def _recording_rules() -> list[dict[str, Any]]:
    rules = []
    for window in RATIO_WINDOWS:
        rules.append({"record": f"baton:request_errors:ratio_rate{window}", "expr": _error_ratio(window)})
        rules.append({"record": f"baton:ttft_slow:ratio_rate{window}", "expr": _slow_ttft_ratio(window)})
    return rules


def _burn_alerts(name: str, record: str, objective: float, what: str, hint: str) -> list[dict[str, Any]]:
    budget = round(1 - objective, 6)
    alerts = []
    for severity, long_window, short_window, burn_rate, hold in BURN_WINDOWS:
        threshold = round(burn_rate * budget, 6)
        summary = f"{{{{ $labels.deployment }}}} is burning its {what} budget {burn_rate}x too fast"
        description = (
            f"Over the last {long_window} (and {short_window}), {{{{ $value | humanizePercentage }}}} of "
            f"{{{{ $labels.deployment }}}}'s requests in pool {{{{ $labels.pool }}}} missed the objective "
            f"({objective:.0%} must meet it). {hint}"
        )
        alerts.append(
            {
                "alert": name,
                "expr": (
                    f"baton:{record}:ratio_rate{long_window} > {threshold}\n"
                    f"and\nbaton:{record}:ratio_rate{short_window} > {threshold}"
                ),
                "for": hold,
                "labels": {"severity": severity, "slo": record.replace("_", "-")},
                "annotations": {
                    "summary": summary,
                    "description": description,
                },
            }
        )
    return alerts


def _rollout_stuck() -> dict[str, Any]:
    by = "max by (namespace, deployment)"
    window = ROLLOUT_STUCK_AFTER
    return {
        "alert": "BatonRolloutStuck",
        "expr": (
            f'{by} (baton_rollout_phase{{phase=~"{IN_FLIGHT_PHASES}"}}) == 1\n'
            # Only deployments watched for the whole window: a new series has no changes yet.
            f"and on (namespace, deployment)\n{by} (baton_rollout_canary_weight offset {window})\n"
            "unless on (namespace, deployment)\n"
            f"(\n  {by} (changes(baton_rollout_phase[{window}])) > 0\n"
            f"  or\n  {by} (changes(baton_rollout_canary_weight[{window}])) > 0\n)"
        ),
        "for": "15m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": f"Rollout of {{{{ $labels.deployment }}}} has not moved for {window}",
            "description": (
                "ModelDeployment {{ $labels.namespace }}/{{ $labels.deployment }} has a rollout in flight "
                f"but neither its phase nor its canary weight changed in {window}. `kubectl describe "
                "modeldeployment` shows the last decision and its evidence; too little canary traffic "
                "(minRequests) is the usual cause."
            ),
        },
    }


def _repeated_rejections() -> dict[str, Any]:
    return {
        "alert": "BatonRepeatedRejections",
        "expr": (
            # increase() extrapolates to the window's edges; rounding gives back the count of decisions.
            "round(sum by (namespace, deployment) "
            f'(increase(baton_rollout_decisions_total{{verdict="Reject"}}[{REJECTIONS_WINDOW}])))'
            f" >= {REJECTIONS_THRESHOLD}"
        ),
        "labels": {"severity": "info"},
        "annotations": {
            "summary": (
                f"{{{{ $labels.deployment }}}} rejected {REJECTIONS_THRESHOLD} or more candidates "
                f"in {REJECTIONS_WINDOW}"
            ),
            "description": (
                "baton rejected {{ $value }} candidates of {{ $labels.namespace }}/"
                f"{{{{ $labels.deployment }}}} in the last {REJECTIONS_WINDOW}. The champion is untouched; "
                "the training pipeline that feeds this deployment is producing regressions."
            ),
        },
    }


def _operator_down() -> dict[str, Any]:
    return {
        "alert": "BatonOperatorDown",
        "expr": f'absent(up{{job="{OPERATOR_JOB}"}} == 1)',
        "for": "5m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "The baton operator is down",
            "description": (
                f'No scrape target of job "{OPERATOR_JOB}" has been up for 5 minutes. Models keep serving, '
                "but no candidate is evaluated, promoted or rolled back until it returns."
            ),
        },
    }


ERROR_HINT = (
    "Check the Degraded condition and the rollout dashboard: a candidate on canary traffic is rolled back "
    "automatically; errors on the champion alone need a human."
)
LATENCY_HINT = "Look at requests in flight per pool: a saturated pool needs more replicas or fewer models."


def rule_groups() -> dict[str, Any]:
    """The rules file: recording rules for the SLO ratios, then the alerts."""
    ttft = f"time-to-first-token (< {TTFT_THRESHOLD_SECONDS} s)"
    return {
        "groups": [
            {
                # One group, ratios first: rules of a group are evaluated in order, so each burn alert
                # reads the ratios of its own evaluation. In two groups, evaluated independently, an
                # alert read this or the previous evaluation's ratio (a flaky promtool scenario).
                "name": "baton.slo",
                "interval": "30s",
                "rules": [
                    *_recording_rules(),
                    *_burn_alerts(
                        "BatonErrorBudgetBurn", "request_errors", AVAILABILITY_OBJECTIVE, "error", ERROR_HINT
                    ),
                    *_burn_alerts("BatonLatencyBudgetBurn", "ttft_slow", TTFT_OBJECTIVE, ttft, LATENCY_HINT),
                ],
            },
            {"name": "baton.rollout", "rules": [_rollout_stuck(), _repeated_rejections()]},
            {"name": "baton.operator", "rules": [_operator_down()]},
        ]
    }


def render() -> str:
    """The rules file as YAML text (deterministic, so a test can diff it)."""
    header = "# Generated by `baton generate` from operator/baton/observability/alerts.py. Do not edit.\n"
    return header + dump_readable(rule_groups())
