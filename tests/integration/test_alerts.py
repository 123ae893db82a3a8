"""baton's alerting rules under the real `promtool`: syntax, and every alert unit-tested on synthetic series.

Each scenario states the series Prometheus would have scraped and the alerts (labels and the exact
text an on-call engineer reads) expected at a given time, including the quiet cases that must not page.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from baton.observability import alerts
from tests.testbed import binaries

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHART_RULES = REPO / "charts" / "baton" / "files" / "alerts.yaml"
MEDICAL = 'pool="cpu-small", deployment="medical", revision="medical-v1"'


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.system("promtool")), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def requests_series(ok_per_minute: int, errors_per_minute: int, minutes: int) -> list[dict[str, str]]:
    return [
        {
            "series": f'baton_requests_total{{{MEDICAL}, endpoint="chat", code="200"}}',
            "values": f"0+{ok_per_minute}x{minutes}",
        },
        {
            "series": f'baton_requests_total{{{MEDICAL}, endpoint="chat", code="500"}}',
            "values": f"0+{errors_per_minute}x{minutes}",
        },
    ]


def ttft_series(fast_per_minute: int, total_per_minute: int, minutes: int) -> list[dict[str, str]]:
    # prometheus_client writes bucket bounds as floats: le="1.0".
    return [
        {
            "series": f'baton_time_to_first_token_seconds_bucket{{{MEDICAL}, le="0.5"}}',
            "values": f"0+{fast_per_minute // 2}x{minutes}",
        },
        {
            "series": f'baton_time_to_first_token_seconds_bucket{{{MEDICAL}, le="1.0"}}',
            "values": f"0+{fast_per_minute}x{minutes}",
        },
        {
            "series": f'baton_time_to_first_token_seconds_bucket{{{MEDICAL}, le="+Inf"}}',
            "values": f"0+{total_per_minute}x{minutes}",
        },
        {
            "series": f"baton_time_to_first_token_seconds_count{{{MEDICAL}}}",
            "values": f"0+{total_per_minute}x{minutes}",
        },
    ]


def burn_alert(
    name: str, severity: str, slo: str, long: str, short: str, burn: str, value: str, what: str
) -> Any:
    hint = {
        "request-errors": "Check the Degraded condition and the rollout dashboard: a candidate on canary "
        "traffic is rolled back automatically; errors on the champion alone need a human.",
        "ttft-slow": "Look at requests in flight per pool: a saturated pool needs more replicas or "
        "fewer models.",
    }[slo]
    objective = {"request-errors": "99%", "ttft-slow": "95%"}[slo]
    return {
        "exp_labels": {"severity": severity, "slo": slo, "pool": "cpu-small", "deployment": "medical"},
        "exp_annotations": {
            "summary": f"medical is burning its {what} budget {burn}x too fast",
            "description": f"Over the last {long} (and {short}), {value} of medical's requests in pool "
            f"cpu-small missed the objective ({objective} must meet it). {hint}",
        },
    }


def with_value(alert: Any, old: str, new: str) -> Any:
    annotations = alert["exp_annotations"]
    return alert | {
        "exp_annotations": annotations | {"description": annotations["description"].replace(old, new)}
    }


ERROR_BURN_CRITICAL = burn_alert(
    "BatonErrorBudgetBurn", "critical", "request-errors", "1h", "5m", "14.4", "20%", "error"
)
ERROR_BURN_WARNING = burn_alert(
    "BatonErrorBudgetBurn", "warning", "request-errors", "6h", "30m", "6.0", "20%", "error"
)
TTFT = "time-to-first-token (< 1 s)"
LATENCY_BURN_CRITICAL = burn_alert(
    "BatonLatencyBudgetBurn", "critical", "ttft-slow", "1h", "5m", "14.4", "90%", TTFT
)
LATENCY_BURN_WARNING = burn_alert(
    "BatonLatencyBudgetBurn", "warning", "ttft-slow", "6h", "30m", "6.0", "90%", TTFT
)

OPERATOR_DOWN = {
    "exp_labels": {"severity": "critical"},
    "exp_annotations": {
        "summary": "The baton operator is down",
        "description": 'No scrape target of job "baton-operator" has been up for 5 minutes. Models keep '
        "serving, but no candidate is evaluated, promoted or rolled back until it returns.",
    },
}

SCENARIOS: dict[str, dict[str, Any]] = {
    "error burn: 20 % server errors pages and opens a ticket": {
        "input_series": requests_series(80, 20, 70),
        "alert_rule_test": [
            {
                "eval_time": "70m",
                "alertname": "BatonErrorBudgetBurn",
                "exp_alerts": [ERROR_BURN_CRITICAL, ERROR_BURN_WARNING],
            },
            {"eval_time": "70m", "alertname": "BatonLatencyBudgetBurn", "exp_alerts": []},
        ],
    },
    "error burn: 0.5 % server errors stay within budget": {
        "input_series": requests_series(995, 5, 70),
        "alert_rule_test": [{"eval_time": "70m", "alertname": "BatonErrorBudgetBurn", "exp_alerts": []}],
    },
    "error burn: alerts resolve once the short window is clean again": {
        # 20 % server errors for an hour, then none: the 5m window clears the page first, the 30m the ticket.
        "input_series": [
            {
                "series": f'baton_requests_total{{{MEDICAL}, endpoint="chat", code="200"}}',
                "values": "0+80x100",
            },
            {
                "series": f'baton_requests_total{{{MEDICAL}, endpoint="chat", code="500"}}',
                "values": "0+20x60 1200+0x40",
            },
        ],
        "alert_rule_test": [
            {
                "eval_time": "58m",
                "alertname": "BatonErrorBudgetBurn",
                "exp_alerts": [ERROR_BURN_CRITICAL, ERROR_BURN_WARNING],
            },
            {
                "eval_time": "70m",
                "alertname": "BatonErrorBudgetBurn",
                "exp_alerts": [with_value(ERROR_BURN_WARNING, "20%", "17.65%")],
            },
            {"eval_time": "95m", "alertname": "BatonErrorBudgetBurn", "exp_alerts": []},
        ],
    },
    "latency burn: 90 % of first tokens slower than 1 s": {
        "input_series": ttft_series(10, 100, 70),
        "alert_rule_test": [
            {
                "eval_time": "70m",
                "alertname": "BatonLatencyBudgetBurn",
                "exp_alerts": [LATENCY_BURN_CRITICAL, LATENCY_BURN_WARNING],
            },
        ],
    },
    "latency burn: 2 % slow first tokens stay within budget": {
        "input_series": ttft_series(98, 100, 70),
        "alert_rule_test": [{"eval_time": "70m", "alertname": "BatonLatencyBudgetBurn", "exp_alerts": []}],
    },
    "operator down: target scraped but down": {
        "input_series": [{"series": 'up{job="baton-operator", instance="10.0.0.1:9090"}', "values": "0x20"}],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "BatonOperatorDown", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "BatonOperatorDown", "exp_alerts": [OPERATOR_DOWN]},
        ],
    },
    "operator down: no target at all": {
        "input_series": [{"series": 'up{job="other"}', "values": "1x20"}],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "BatonOperatorDown", "exp_alerts": [OPERATOR_DOWN]}
        ],
    },
    "operator up: one of two replicas up is enough": {
        "input_series": [
            {"series": 'up{job="baton-operator", instance="a"}', "values": "1x20"},
            {"series": 'up{job="baton-operator", instance="b"}', "values": "0x20"},
        ],
        "alert_rule_test": [{"eval_time": "10m", "alertname": "BatonOperatorDown", "exp_alerts": []}],
    },
}


def run_scenarios(tmp_path: Path, rules: Path, scenarios: dict[str, dict[str, Any]]) -> None:
    for name, scenario in scenarios.items():
        test_file = tmp_path / "tests.yaml"
        document = {
            "rule_files": [str(rules)],
            "evaluation_interval": "1m",
            "tests": [{"name": name, "interval": "1m", **scenario}],
        }
        test_file.write_text(yaml.safe_dump(document, sort_keys=False))
        result = promtool("test", "rules", test_file)
        assert result.returncode == 0, f"scenario {name!r}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.yaml"
    path.write_text(alerts.render())
    return path


def test_chart_rules_pass_promtool_check(rules_file: Path) -> None:
    assert CHART_RULES.read_text() == rules_file.read_text(), "charts/baton/files/alerts.yaml is stale"
    result = promtool("check", "rules", CHART_RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout


def test_every_alert_has_a_severity_and_a_description() -> None:
    found = [rule for group in alerts.rule_groups()["groups"] for rule in group["rules"] if "alert" in rule]
    assert {rule["alert"] for rule in found} == {
        "BatonErrorBudgetBurn",
        "BatonLatencyBudgetBurn",
        "BatonRolloutStuck",
        "BatonRepeatedRejections",
        "BatonOperatorDown",
    }
    for rule in found:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_slo_and_operator_alerts(tmp_path: Path, rules_file: Path, name: str) -> None:
    run_scenarios(tmp_path, rules_file, {name: SCENARIOS[name]})
