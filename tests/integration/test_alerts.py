"""baton's alerting rules under the real `promtool`, and the metrics that rules and dashboards read.

Each promtool scenario states the series Prometheus would have scraped and the alerts (labels and
the exact text an on-call engineer reads) expected at a given time, including the quiet cases that
must not page. A real Prometheus then scrapes a real data plane (Ray Serve + llama.cpp) and the
control plane's rollout metrics: every metric a dashboard or rule names must be in that scrape, and
the recording rules must evaluate on it.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import httpx
import pytest
import yaml
from prometheus_client import start_http_server

from baton.api import ModelCandidate, ModelDeploymentStatus
from baton.k8s.controller import RECONCILES
from baton.k8s.kube import API_WRITES
from baton.observability import alerts, dashboards
from baton.observability.rollout_metrics import RolloutMetrics
from baton_serving.config import PoolConfig
from tests.plugins_serving import AUTH, LocalServe, free_port
from tests.testbed import binaries
from tests.testbed.prometheus import Prometheus

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


def phase_series(current: str, values: str) -> list[dict[str, str]]:
    """One-hot phase series as the operator exports them: `values` for `current`, 0 for the others."""
    others = values.replace("1x", "0x")
    return [
        {
            "series": f'baton_rollout_phase{{namespace="ml", deployment="medical", phase="{phase}"}}',
            "values": values if phase == current else others,
        }
        for phase in ("Pending", "Serving", "Canary", "Promoted")
    ]


def rejections(offline: str, online: str) -> list[dict[str, str]]:
    """Rejections by the offline and the online gate; like RolloutMetrics, every series starts at 0."""
    series = (
        'baton_rollout_decisions_total{{namespace="ml", deployment="medical", verdict="Reject", gate="{}"}}'
    )
    return [
        {"series": series.format(gate), "values": values}
        for gate, values in (("offline", offline), ("online", online))
    ]


ROLLOUT_STUCK = {
    "exp_labels": {"severity": "warning", "namespace": "ml", "deployment": "medical"},
    "exp_annotations": {
        "summary": "Rollout of medical has not moved for 1h",
        "description": "ModelDeployment ml/medical has a rollout in flight but neither its phase nor its "
        "canary weight changed in 1h. `kubectl describe modeldeployment` shows the last decision and its "
        "evidence; too little canary traffic (minRequests) is the usual cause.",
    },
}
REJECTIONS = {
    "exp_labels": {"severity": "info", "namespace": "ml", "deployment": "medical"},
    "exp_annotations": {
        "summary": "medical rejected 3 or more candidates in 24h",
        "description": "baton rejected 3 candidates of ml/medical in the last 24h. The champion is "
        "untouched; the training pipeline that feeds this deployment is producing regressions.",
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
    "error ratio: no server error at all is a ratio of 0, not a missing series": {
        "input_series": [
            {
                "series": f'baton_requests_total{{{MEDICAL}, endpoint="chat", code="200"}}',
                "values": "0+60x20",
            },
            {"series": f'baton_requests_total{{{MEDICAL}, endpoint="chat", code="404"}}', "values": "0+6x20"},
        ],
        "promql_expr_test": [
            {
                "expr": "baton:request_errors:ratio_rate5m",
                "eval_time": "20m",
                "exp_samples": [
                    {
                        "labels": 'baton:request_errors:ratio_rate5m{pool="cpu-small", deployment="medical"}',
                        "value": 0,
                    }
                ],
            }
        ],
        "alert_rule_test": [{"eval_time": "20m", "alertname": "BatonErrorBudgetBurn", "exp_alerts": []}],
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
    "rollout stuck: canary at 10 % with no change for over an hour": {
        "input_series": [
            *phase_series("Canary", "1x100"),
            {
                "series": 'baton_rollout_canary_weight{namespace="ml", deployment="medical"}',
                "values": "10x100",
            },
        ],
        "alert_rule_test": [
            {"eval_time": "50m", "alertname": "BatonRolloutStuck", "exp_alerts": []},
            {"eval_time": "80m", "alertname": "BatonRolloutStuck", "exp_alerts": [ROLLOUT_STUCK]},
        ],
    },
    "rollout stuck: a canary whose weight moves is not stuck": {
        "input_series": [
            *phase_series("Canary", "1x100"),
            {
                "series": 'baton_rollout_canary_weight{namespace="ml", deployment="medical"}',
                "values": "10x30 20x30 50x40",
            },
        ],
        "alert_rule_test": [{"eval_time": "80m", "alertname": "BatonRolloutStuck", "exp_alerts": []}],
    },
    "rollout stuck: a resting champion is never stuck": {
        "input_series": [
            *phase_series("Promoted", "1x100"),
            {
                "series": 'baton_rollout_canary_weight{namespace="ml", deployment="medical"}',
                "values": "0x100",
            },
        ],
        "alert_rule_test": [{"eval_time": "90m", "alertname": "BatonRolloutStuck", "exp_alerts": []}],
    },
    "rollout stuck: a deployment seen for less than the window is not judged yet": {
        "input_series": [
            *phase_series("Pending", "_x40 1x60"),
            {
                "series": 'baton_rollout_canary_weight{namespace="ml", deployment="medical"}',
                "values": "_x40 0x60",
            },
        ],
        "alert_rule_test": [{"eval_time": "90m", "alertname": "BatonRolloutStuck", "exp_alerts": []}],
    },
    "repeated rejections: three in a day": {
        "input_series": rejections("0 0 1 1 2 2 2 2", "0 0 0 0 0 1 1 1"),
        "alert_rule_test": [
            {"eval_time": "7h", "alertname": "BatonRepeatedRejections", "exp_alerts": [REJECTIONS]}
        ],
    },
    "repeated rejections: two in a day are not a pattern": {
        "input_series": rejections("0 0 1 1 1 1 1 1", "0 0 0 0 0 1 1 1"),
        "alert_rule_test": [{"eval_time": "7h", "alertname": "BatonRepeatedRejections", "exp_alerts": []}],
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


METRIC = re.compile(r"\bbaton_[a-z0-9_]+")
# A pool name of its own: the data plane keeps per-pool metric files on the node, so another baton
# running here with a common pool name (the demo's) would show up in this scrape.
SCRAPED_POOL = f"observability-{uuid.uuid4().hex[:8]}"


def referenced_metrics() -> set[str]:
    texts = [alerts.render(), *dashboards.render_all().values()]
    return {name for text in texts for name in METRIC.findall(text)}


def serve_pool(local_serve: LocalServe, model_artifact: Callable[..., Any]) -> None:
    revisions = {
        "medical-v1": model_artifact("medical", "smoke", "Q8_0"),
        "medical-v2": model_artifact("medical", "smoke", "Q4_K_M"),
    }
    local_serve.deploy(
        PoolConfig.model_validate(
            {
                "pool": SCRAPED_POOL,
                "deployments": [
                    {
                        "name": "medical",
                        "revisions": [
                            {
                                "name": name,
                                "artifact": {
                                    "uri": str(a.path),
                                    "digest": a.digest,
                                    "size_bytes": a.size_bytes,
                                },
                                "context_length": 256,
                                "resources": {"num_cpus": 0.05},
                            }
                            for name, a in revisions.items()
                        ],
                        "route": {"weights": {"medical-v1": 50, "medical-v2": 50}},
                    }
                ],
            }
        )
    )


def send_traffic(url: str) -> None:
    """Every kind of request the dashboards chart: plain, streamed, structured, and refused."""
    chat = {
        "model": "medical",
        "messages": [{"role": "user", "content": "Fever since Monday."}],
        "max_tokens": 4,
    }
    schema = {"type": "object", "properties": {"urgent": {"type": "boolean"}}, "required": ["urgent"]}
    structured = chat | {
        "max_tokens": 32,
        "response_format": {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}},
    }
    for _ in range(6):
        for body in (chat, chat | {"stream": True}, structured):
            assert (
                httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120).status_code
                == 200
            )
    unknown = httpx.post(
        f"{url}/v1/chat/completions", json=chat | {"model": "nobody"}, headers=AUTH, timeout=60
    )
    assert unknown.status_code == 404


DECISION = {"verdict": "Promote", "gate": "offline", "candidate": "v2", "reason": "BenchmarkSuperior"}


def canary_status(*decision_times: str) -> ModelDeploymentStatus:
    history = [DECISION | {"time": time} for time in decision_times]
    return ModelDeploymentStatus.model_validate({"phase": "Canary", "canaryWeight": 10, "history": history})


def rollout_metrics_server() -> tuple[RolloutMetrics, WSGIServer, int]:
    metrics = RolloutMetrics()
    metrics.observe_deployment("ml", "medical", ModelDeploymentStatus.model_validate({"phase": "Serving"}))
    metrics.observe_deployment("ml", "medical", canary_status())
    candidate = {
        "metadata": {"name": "medical-v2"},
        "spec": {
            "deployment": "medical",
            "version": "v2",
            "artifact": {"uri": "file:///m.gguf", "digest": "sha256:" + "0" * 64, "quantization": "Q8_0"},
        },
        "status": {"scores": [{"benchmark": "extraction", "items": 40, "champion": 0.5, "candidate": 0.7}]},
    }
    metrics.observe_candidate("ml", ModelCandidate.model_validate(candidate))
    port = free_port()
    return metrics, metrics.serve(port, address="127.0.0.1"), port


def test_dashboards_and_rules_read_only_metrics_a_real_scrape_has(
    local_serve: LocalServe,
    model_artifact: Callable[..., Any],
    prometheus: Callable[..., Prometheus],
    rules_file: Path,
    request: pytest.FixtureRequest,
) -> None:
    serve_pool(local_serve, model_artifact)
    send_traffic(local_serve.url)
    rollout, operator_metrics, operator_port = rollout_metrics_server()
    request.addfinalizer(operator_metrics.shutdown)
    # The operator's own counters live in the default registry, as in `baton operator --metrics-port`.
    RECONCILES.labels(kind="deployment")
    API_WRITES.labels(resource="modeldeployments")
    operator_port_default = free_port()
    operator_default, _ = start_http_server(operator_port_default, addr="127.0.0.1")
    request.addfinalizer(operator_default.shutdown)
    data_plane = local_serve.url.removeprefix("http://")
    targets = [data_plane, f"127.0.0.1:{operator_port}", f"127.0.0.1:{operator_port_default}"]
    server = prometheus(targets=targets, rule_files=[rules_file])
    server.wait_for('count(up{job="baton"} == 1) == 3', timeout=120)
    server.wait_for("baton_time_to_first_token_seconds_count", timeout=120)

    scraped = set(server.api("label/__name__/values"))
    referenced = referenced_metrics()
    assert {"baton_requests_total", "baton_rollout_canary_weight", "baton_benchmark_score"} <= referenced
    assert referenced <= scraped, (
        f"named by dashboards or rules, absent from the scrape: {sorted(referenced - scraped)}"
    )

    # Queries behave on the real series: both revisions answer, the error ratio is a number, and
    # the recording rules the burn alerts read evaluate with the labels they aggregate by.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        send_traffic(local_serve.url)
        rates = server.query('sum by (revision) (rate(baton_requests_total{deployment="medical"}[1m]))')
        ratios = server.query('baton:request_errors:ratio_rate5m{deployment="medical"}')
        if {r["metric"]["revision"] for r in rates} == {"medical-v1", "medical-v2"} and ratios:
            break
        time.sleep(2)
    assert {r["metric"]["revision"] for r in rates} == {"medical-v1", "medical-v2"}
    (ratio,) = ratios
    assert ratio["metric"] == {
        "__name__": "baton:request_errors:ratio_rate5m",
        "pool": SCRAPED_POOL,
        "deployment": "medical",
    }
    assert float(ratio["value"][1]) == 0.0
    (weight,) = server.query('baton_rollout_canary_weight{deployment="medical"}')
    assert weight["value"][1] == "10"
    # A decision made while Prometheus watches shows up as the rollout dashboard's annotation.
    rollout.observe_deployment("ml", "medical", canary_status("2026-01-01T00:00:00Z"))
    (annotation,) = json.loads(dashboards.render_all()["rollout.json"])["annotations"]["list"]
    (marked,) = server.wait_for(annotation["expr"].replace("$deployment", "medical"), timeout=60)
    assert (marked["metric"]["verdict"], marked["metric"]["gate"]) == ("Promote", "offline")
    # Every rule evaluates on the real series without an error (e.g. a many-to-many match).
    rules = [rule for group in server.api("rules")["groups"] for rule in group["rules"]]
    assert len(rules) == sum(len(group["rules"]) for group in alerts.rule_groups()["groups"])
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]
    # Every dashboard query parses and evaluates, with Grafana's variables filled in.
    variables = {"$__rate_interval": "1m", "$deployment": "medical", "$pool": SCRAPED_POOL}
    for document in dashboards.render_all().values():
        for expr in re.findall(r'"(?:expr|query)": "((?:[^"\\]|\\.)*)"', document):
            query = json.loads(f'"{expr}"')
            for variable, value in variables.items():
                query = query.replace(variable, value)
            if not query.startswith("label_values("):
                server.query(query)  # raises with Prometheus' error message
