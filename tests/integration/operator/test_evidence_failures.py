"""Evidence tasks that fail end recorded, in the real operator against the real kube-apiserver.

Each failure kind that used to leave a deployment Benchmarking forever or end a poller or sampler
silently is injected for real: Benchmark items that do not validate, a ModelSource directory that
does not exist, a pool ingress that does not answer its `/metrics`, Benchmark items at a URL or
path the fetch policy refuses (a file outside the roots, the service-account token, the cloud's
metadata endpoint). `baton up` runs the same
evidence layer (tests/integration/local/test_evidence_failures_local.py, tests/unit/evidence).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.integration.operator.fixtures import Cluster, wait_for
from tests.integration.operator.test_operator_api import (
    DIGEST,
    TIMEOUT,
    directory_source_yaml,
    play_kuberay,
    pool_yaml,
    status_of,
)
from tests.integration.operator.test_operator_api import deployment_yaml as api_deployment_yaml

pytestmark = pytest.mark.integration
SECRET = "PATIENT-NAME-7f3a"  # item content that no status, condition or Event may echo


def deployment_yaml(analysis: str) -> str:
    """The API tests' deployment with another `analysis` in place of theirs (`ungated: true`)."""
    theirs = "  analysis: {ungated: true}\n"
    assert theirs in api_deployment_yaml()
    return api_deployment_yaml().replace(theirs, f"  analysis: {analysis}\n")


def candidate_yaml() -> str:
    return f"""
apiVersion: baton.dev/v1alpha1
kind: ModelCandidate
metadata: {{name: medical-v2}}
spec:
  deployment: medical
  version: v2
  artifact: {{uri: "file:///models/medical-v2.gguf", digest: "{DIGEST}", quantization: Q8_0}}
"""


def serve_then_offer(cluster: Cluster, namespace: str, operator, resources: str) -> None:
    """Serve the champion, offer v2, and play KubeRay until the candidate's engine runs."""
    cluster.apply_text(namespace, pool_yaml() + "---" + resources)
    wait_for("the RayService", lambda: cluster.get("rayservice", namespace, "cpu-small"), TIMEOUT)
    play_kuberay(cluster, namespace)
    wait_for(
        "phase Serving",
        lambda: status_of(cluster, namespace, "medical").get("phase") == "Serving",
        TIMEOUT,
        diagnose=operator.tail,
    )
    cluster.apply_text(namespace, candidate_yaml())
    wait_for(
        "the candidate's engine app",
        lambda: (
            "medical.medical-v2" in cluster.get("rayservice", namespace, "cpu-small")["spec"]["serveConfigV2"]
        ),
        TIMEOUT,
        diagnose=operator.tail,
    )
    play_kuberay(cluster, namespace)


def decided(cluster: Cluster, namespace: str) -> dict | None:
    return ((cluster.get("modelcandidate", namespace, "medical-v2") or {}).get("status") or {}).get(
        "decision"
    )


def failure_events(cluster: Cluster, namespace: str, name: str) -> list[dict]:
    return [event for event in cluster.events(namespace, name) if event["reason"] == "EvidenceTaskFailed"]


def benchmark_items_failure(
    cluster: Cluster, namespace: str, start_operator, url: str, digest: str
) -> tuple[str, str]:
    """(decision message, Event message) when the deployment's one Benchmark reads its items from
    `url`, after checking it failed in the open: Inconclusive, one Warning Event, nothing read shown."""
    benchmark = f"""
apiVersion: baton.dev/v1alpha1
kind: Benchmark
metadata: {{name: medical-qa}}
spec:
  domain: medical
  scorer: {{type: exact}}
  uri: {{url: "{url}", digest: "{digest}"}}
"""
    operator = start_operator()
    serve_then_offer(
        cluster,
        namespace,
        operator,
        benchmark + "---" + deployment_yaml("{benchmarks: [{name: medical-qa}]}"),
    )
    decision = wait_for(
        "a decision on v2", lambda: decided(cluster, namespace), TIMEOUT, diagnose=operator.tail
    )
    assert decision["verdict"] == "Inconclusive"
    assert status_of(cluster, namespace, "medical").get("phase") != "Benchmarking"
    (event,) = failure_events(cluster, namespace, "medical")
    assert event["type"] == "Warning"
    everything = json.dumps(
        [cluster.items(kind, namespace) for kind in ("modeldeployments", "modelcandidates")]
    )
    everything += json.dumps(cluster.events(namespace, "medical") + cluster.events(namespace, "medical-v2"))
    assert SECRET not in everything
    return decision["message"], event["message"]


def test_benchmark_items_that_do_not_validate_end_inconclusive(
    cluster: Cluster, namespace: str, start_operator, tmp_path: Path
) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": 1, "prompt": SECRET}) + "\n")  # no `expected`, a number for `id`
    digest = "sha256:" + hashlib.sha256(items.read_bytes()).hexdigest()
    messages = benchmark_items_failure(cluster, namespace, start_operator, items.as_uri(), digest)
    assert all("ValidationError" in message for message in messages)


SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("link", "not under an allowed local root"),  # inside the root, a link to a file outside it
        ("token", "not under an allowed local root"),
        ("metadata", "169.254.169.254, which is not a public address"),
    ],
)
def test_benchmark_items_the_fetch_policy_refuses_end_inconclusive_and_nothing_read_is_shown(
    cluster: Cluster, namespace: str, start_operator, tmp_path: Path, where: str, reason: str
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-token"  # beside the test's root, not in it
    outside.write_text(SECRET)
    (tmp_path / "items.jsonl").symlink_to(outside)
    url = {
        "link": (tmp_path / "items.jsonl").as_uri(),
        "token": f"file://{SERVICE_ACCOUNT_TOKEN}",
        "metadata": "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
    }[where]
    # Pinned to the file's real digest: read, it would pass the digest check and be parsed.
    digest = "sha256:" + hashlib.sha256(SECRET.encode()).hexdigest()
    messages = benchmark_items_failure(cluster, namespace, start_operator, url, digest)
    assert all("FetchError" in message and reason in message for message in messages)


def test_an_ingress_without_metrics_ends_the_canary_inconclusive(
    cluster: Cluster, namespace: str, start_operator
) -> None:
    operator = start_operator()  # the pools' endpoint, 127.0.0.1:9, answers nothing
    serve_then_offer(
        cluster, namespace, operator, deployment_yaml("{metrics: [{name: errors, kind: errorRate}]}")
    )
    wait_for("the canary", lambda: status_of(cluster, namespace, "medical").get("phase") == "Canary", TIMEOUT)

    def rolled_back() -> dict | None:
        if status_of(cluster, namespace, "medical").get("phase") == "RollingBack":
            play_kuberay(cluster, namespace)  # the champion takes all traffic back
        return decided(cluster, namespace)

    decision = wait_for("a decision on v2", rolled_back, TIMEOUT, diagnose=operator.tail)
    assert decision["verdict"] == "Inconclusive" and "canary sampling" in decision["message"]
    assert "ConnectError" in decision["message"]
    reasons = [event["message"] for event in failure_events(cluster, namespace, "medical")]
    assert len(reasons) == 2 and all("canary sampling failed" in reason for reason in reasons)  # first, last


def test_a_source_directory_that_is_missing_is_reported_and_polled_again(
    cluster: Cluster, namespace: str, start_operator, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    operator = start_operator()
    cluster.apply_text(
        namespace,
        deployment_yaml("{ungated: true}") + "---" + directory_source_yaml(releases),
    )

    def ready() -> dict:
        status = (cluster.get("modelsource", namespace, "medical-drops") or {}).get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})

    failed = wait_for(
        "Ready=False", lambda: ready().get("status") == "False" and ready(), TIMEOUT, diagnose=operator.tail
    )
    assert failed["reason"] == "PollFailed" and "FileNotFoundError" in failed["message"]
    assert failure_events(cluster, namespace, "medical-drops")
    releases.mkdir()
    (releases / "medical-v3.Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 60)
    wait_for(
        "v3 discovered",
        lambda: cluster.get("modelcandidate", namespace, "medical-v3"),
        TIMEOUT,
        diagnose=operator.tail,
    )
    assert wait_for("Ready=True", lambda: ready().get("status") == "True", TIMEOUT)
