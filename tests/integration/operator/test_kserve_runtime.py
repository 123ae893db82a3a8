"""`runtime: kserve` against the real kube-apiserver with KServe's real InferenceService CRD installed.

The CRD is KServe's own (vendored in manifests/third_party/), so the API server validates what baton
renders against KServe's schema. No KServe controller runs: the test writes the InferenceService's
status itself, as KServe's controller would, and everything else is the real operator process.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from baton.api import ModelDeployment
from baton.k8s.inference_service import inference_service
from tests.integration.operator.fixtures import Cluster, wait_for
from tests.unit.rollout.helpers import in_phase

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "0" * 64
TIMEOUT = 90.0


def rendered(namespace: str, phase: str) -> dict[str, Any]:
    deployment = in_phase(phase, runtime="kserve")
    return inference_service(deployment, {"name": "medical", "namespace": namespace, "uid": "some-uid"})


def server_side_apply(cluster: Cluster, manifest: dict[str, Any]):
    return cluster.plane.kubectl(
        "apply", "--server-side", "--field-manager=baton-operator", "--validate=strict", "-f", "-",
        input=json.dumps(manifest),
    )  # fmt: skip


@pytest.mark.parametrize("phase", ["Serving", "Benchmarking", "Canary"])
def test_kserve_stores_every_field_baton_renders(
    kserve_crd, cluster: Cluster, namespace: str, phase: str
) -> None:
    manifest = rendered(namespace, phase)
    applied = server_side_apply(cluster, manifest)
    assert applied.returncode == 0, applied.stderr
    stored = cluster.get("inferenceservice", namespace, "medical")
    assert stored is not None
    # Structural schemas prune unknown fields silently: an equal spec means KServe knows every field.
    assert stored["spec"] == manifest["spec"]
    assert stored["metadata"]["labels"] == manifest["metadata"]["labels"]
    assert stored["metadata"]["ownerReferences"] == manifest["metadata"]["ownerReferences"]


def test_kserve_refuses_a_misspelled_field(kserve_crd, cluster: Cluster, namespace: str) -> None:
    manifest = rendered(namespace, "Serving")
    model = manifest["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    refused = server_side_apply(cluster, manifest)
    assert refused.returncode != 0
    assert ".spec.predictor.model.storageURI: field not declared in schema" in refused.stderr


def test_kserve_refuses_a_traffic_percent_that_is_not_a_number(
    kserve_crd, cluster: Cluster, namespace: str
) -> None:
    manifest = rendered(namespace, "Canary")
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = "ten percent"
    refused = cluster.plane.kubectl("create", "--validate=false", "-f", "-", input=json.dumps(manifest))
    assert refused.returncode != 0
    assert "spec.predictor.canaryTrafficPercent" in refused.stderr
    assert cluster.get("inferenceservice", namespace, "medical") is None


DEPLOYMENT = f"""
apiVersion: baton.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: medical}}
spec:
  domain: medical
  pool: cpu-small
  runtime: kserve
  model:
    version: v1
    artifact: {{uri: "pvc://models/medical-v1.gguf", digest: "{DIGEST}", quantization: Q8_0}}
  rollout:
    steps: [{{weight: 50, pause: 1h, minRequests: 0}}]
  analysis: {{ungated: true}}
"""
CANDIDATE = f"""
apiVersion: baton.dev/v1alpha1
kind: ModelCandidate
metadata: {{name: medical-v2}}
spec:
  deployment: medical
  version: v2
  artifact: {{uri: "pvc://models/medical-v2.gguf", digest: "{DIGEST}", quantization: Q8_0}}
"""


def play_kserve(cluster: Cluster, namespace: str, isvc: dict[str, Any]) -> None:
    """Write the status KServe's controller writes once the latest revision is ready."""
    status = {
        "observedGeneration": isvc["metadata"]["generation"],
        "conditions": [{"type": "Ready", "status": "True"}],
        "modelStatus": {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded"}},
    }
    cluster.kubectl(
        "patch", "inferenceservice", "medical", "--namespace", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def predictor_when(cluster: Cluster, namespace: str, storage_uri: str, percent: int) -> Any:
    isvc = cluster.get("inferenceservice", namespace, "medical")
    predictor = (isvc or {}).get("spec", {}).get("predictor", {})
    wanted = (predictor.get("model", {}).get("storageUri"), predictor.get("canaryTrafficPercent"))
    return isvc if wanted == (storage_uri, percent) else None


def phase_of(cluster: Cluster, namespace: str) -> str | None:
    return ((cluster.get("modeldeployment", namespace, "medical") or {}).get("status") or {}).get("phase")


def test_the_operator_serves_a_kserve_deployment_and_canaries_a_candidate(
    kserve_crd, cluster: Cluster, namespace: str, start_operator
) -> None:
    operator = start_operator("http://127.0.0.1:9", "--watch-kserve")
    cluster.apply_text(namespace, DEPLOYMENT)

    champion = wait_for(
        "the InferenceService serving v1",
        lambda: predictor_when(cluster, namespace, "pvc://models/medical-v1.gguf", 100),
        TIMEOUT,
        diagnose=operator.tail,
    )
    owner = champion["metadata"]["ownerReferences"][0]
    deployment = ModelDeployment.model_validate(cluster.get("modeldeployment", namespace, "medical"))
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "ModelDeployment",
        "medical",
        deployment.metadata.uid,
    )
    assert champion["metadata"]["labels"]["baton.dev/revision"] == "medical-v1"
    assert champion["spec"]["predictor"]["model"]["modelFormat"] == {"name": "gguf"}
    assert phase_of(cluster, namespace) == "Pending"

    play_kserve(cluster, namespace, champion)
    wait_for(
        "phase Serving", lambda: phase_of(cluster, namespace) == "Serving", TIMEOUT, diagnose=operator.tail
    )

    cluster.apply_text(namespace, CANDIDATE)
    benchmarking = wait_for(
        "v2 deployed beside v1 without traffic",
        lambda: predictor_when(cluster, namespace, "pvc://models/medical-v2.gguf", 0),
        TIMEOUT,
        diagnose=operator.tail,
    )
    labels = benchmarking["metadata"]["labels"]
    assert (labels["baton.dev/revision"], labels["baton.dev/champion"]) == ("medical-v2", "medical-v1")

    play_kserve(cluster, namespace, benchmarking)
    wait_for(
        "the canary's first step on the InferenceService",
        lambda: predictor_when(cluster, namespace, "pvc://models/medical-v2.gguf", 50),
        TIMEOUT,
        diagnose=operator.tail,
    )
    assert phase_of(cluster, namespace) == "Canary"
    writers = {
        entry["manager"]
        for entry in cluster.get("inferenceservice", namespace, "medical")["metadata"]["managedFields"]
    }
    assert "baton-operator" in writers
