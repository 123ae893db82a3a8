"""One canary judged on real Prometheus series in both shells: `baton up --prometheus-url` and the
operator with `--prometheus-url`, same spec, same verdict.

The deployment's only gate is a `provider: prometheus` metric bound relative to the champion: the
candidate's p95 time to first token may be at most the champion's x (1 + tolerance), both read from
the test bed's Prometheus at one instant. The canary traffic is non-streamed OpenAI chat, so the
candidate has a TTFT series only because unary answers record one (without it the step ends with no
data, Inconclusive). A Prometheus reading carries no sample count, so the query itself waits for
MIN_OBSERVATIONS answers of the revision (no data before that: the step keeps collecting) and a
freshly loaded revision's first slow answer cannot decide alone.
"""

from __future__ import annotations

import os
import sys

import httpx
import pytest
import yaml

from baton.local.store import LocalStore
from tests.integration.operator.fixtures import Cluster, Process, wait_for
from tests.integration.test_prometheus_provider import P95_TTFT
from tests.testbed.processes import free_ports
from tests.testbed.workloads import Traffic, artifact, candidate_document

pytestmark = pytest.mark.e2e

MIN_OBSERVATIONS = 20
# Long enough for MIN_OBSERVATIONS candidate answers at half of one sequential client's traffic
# (~5/s; under load ~3/s): a reading still empty when the pause ends would make the step Inconclusive.
PAUSE_S = 10
TOLERANCE = 1.0
TTFT_QUERY = (
    f"{P95_TTFT} and on() sum(baton_time_to_first_token_seconds_count"
    f'{{deployment="{{{{deployment}}}}",revision="{{{{revision}}}}"}}) >= {MIN_OBSERVATIONS}'
)
ROLLOUT_TIMEOUT = 420.0
FINAL = ("Promoted", "Rejected", "Inconclusive", "RolledBack", "Failed")
# What both shells must decide: v2 is v1's shape, as fast, so within the bound, and promoted on it.
EXPECTED = ("Promoted", "Promote", "AllGatesPassed", "Promote", "WithinRelativeBound")


def manifests(models) -> str:
    """The pool, the deployment (champion v1) and the candidate v2: what both shells are given."""
    deployment = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "medical"},
        "spec": {
            "domain": "medical",
            "pool": "cpu-small",
            "model": {"version": "v1", "artifact": artifact(f"file://{models['v1'].path}", models["v1"])},
            "engine": {"contextLength": 128, "maxOutputTokens": 16},
            "rollout": {"steps": [{"weight": 50, "pause": f"{PAUSE_S}s", "minRequests": 10}]},
            "analysis": {
                "minSamples": 5,
                "metrics": [
                    {
                        "name": "ttft",
                        "kind": "latency",
                        "provider": "prometheus",
                        "query": TTFT_QUERY,
                        "tolerance": TOLERANCE,
                    }
                ],
            },
        },
    }
    pool = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "cpu-small"},
        "spec": {"workers": 1, "workerResources": {"cpu": "2", "memory": "8Gi"}},
    }
    return (
        yaml.safe_dump_all([pool, deployment])
        + "---\n"
        + yaml.safe_dump(candidate_document("v2", f"file://{models['v2'].path}", models["v2"]))
    )


def verdict(candidate_phase: str, record: list[dict]) -> tuple:
    """What a shell decided: the candidate's phase, the final verdict and reason, and the canary
    step's Prometheus evidence (the candidate's reading and the bound read from the champion's)."""
    final, (step,) = record[-1], [d for d in record[:-1] if d["gate"] == "online"]
    (relative,) = [e for e in step["evidence"] if e["test"] == "relative-threshold"]
    assert relative["metric"] == "ttft" and relative["margin"] == TOLERANCE, relative
    assert 0 < relative["value"] <= relative["threshold"], relative
    return candidate_phase, final["verdict"], final["reason"], step["verdict"], step["reason"]


def answers(base_url: str) -> bool:
    body = {"model": "medical", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    try:
        return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def models(model_artifact):
    return {version: model_artifact("medical", version, "Q8_0", score=False) for version in ("v1", "v2")}


@pytest.mark.timeout(900)
def test_baton_up_judges_the_canary_on_prometheus(tmp_path, models, prometheus) -> None:
    (port,) = free_ports(1)
    server = prometheus(targets=[f"127.0.0.1:{port}"])
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "medical.yaml").write_text(manifests(models))
    state = tmp_path / "state"
    argv = [sys.executable, "-m", "baton.cli", "up", str(resources), "--state-dir", str(state)]
    argv += ["--port", str(port), "--prometheus-url", server.url, "--no-auth"]
    up = Process(argv, tmp_path / "baton-up.log", dict(os.environ))
    store = LocalStore(state)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for("baton up to serve", lambda: answers(base_url), ROLLOUT_TIMEOUT, diagnose=up.tail)
        with Traffic(base_url) as traffic:
            wait_for(
                "the candidate's decision",
                lambda: (store.read_status("ModelCandidate", "medical-v2") or {}).get("phase") in FINAL,
                ROLLOUT_TIMEOUT,
                diagnose=lambda: f"{store.read_status('ModelDeployment', 'medical')}\n{up.tail()}",
            )
    finally:
        up.stop()
    assert traffic.failures == [], traffic.failures[:5]
    phase = store.read_status("ModelCandidate", "medical-v2")["phase"]
    assert verdict(phase, store.read_status("ModelDeployment", "medical")["record"]) == EXPECTED


@pytest.mark.timeout(900)
def test_the_operator_judges_the_same_canary_the_same_way(
    cluster: Cluster, namespace: str, start_operator, start_pool_runner, models, prometheus
) -> None:
    runner, endpoint = start_pool_runner("cpu-small")
    server = prometheus(targets=[endpoint.removeprefix("http://")])
    operator = start_operator(endpoint, "--prometheus-url", server.url)

    def status(kind: str, name: str) -> dict:
        return (cluster.get(kind, namespace, name) or {}).get("status") or {}

    def diagnose() -> str:
        return f"{status('modeldeployment', 'medical')}\n{operator.tail()}\n{runner.tail()}"

    cluster.apply_text(namespace, manifests(models))
    wait_for("the champion to serve", lambda: answers(endpoint), ROLLOUT_TIMEOUT, diagnose=diagnose)
    with Traffic(endpoint) as traffic:
        wait_for(
            "the candidate's decision",
            lambda: status("modelcandidate", "medical-v2").get("phase") in FINAL,
            ROLLOUT_TIMEOUT,
            diagnose=diagnose,
        )
    assert traffic.failures == [], traffic.failures[:5]
    phase = status("modelcandidate", "medical-v2")["phase"]
    assert verdict(phase, status("modeldeployment", "medical")["record"]) == EXPECTED
