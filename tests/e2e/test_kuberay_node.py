"""KubeRay's real operator runs the RayService baton renders for a ModelPool, on the test bed's node.

Until this test, `baton pool-runner` played KubeRay's part: no RayService baton renders had been read
by KubeRay and no Ray head had run in a pod. Here the path of a cluster: the RayService (rendered by
`baton.k8s.rayservice.ray_service` for a real ModelPool, its owner) -> KubeRay's RayCluster -> a head
pod of the pool image on the node -> `serveConfigV2` deployed by KubeRay through the head's dashboard
(via the API server's service proxy) -> KubeRay's RayService status reports the applications RUNNING,
which is what baton reads (`observe_revisions`) -> the ingress answers a chat completion.

The factory's GGUF reaches the pod through a hostPath volume at /models: the test bed has one node,
so the host's model directory is the node's. A cluster uses a model volume or an artifact URI.
Worker pods stay in KubeRay's `wait-gcs-ready` init container: they join the head by its Service's
DNS name, and the test bed has no cluster DNS; Serve runs its replicas on the head.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from baton.api import ModelDeployment, ModelPool
from baton.api.deployment import ModelDeploymentStatus, Phase, RevisionStatus
from baton.api.pool import DEFAULT_RAY_IMAGE
from baton.k8s.rayservice import observe_revisions, ray_service, serve_config
from baton.rollout.model import RevisionState
from baton.rollout.render import render_pool
from tests.testbed import binaries
from tests.testbed.kuberay import KubeRay
from tests.testbed.node import Node
from tests.testbed.processes import wait_for

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BATON_CRDS = REPO / "manifests" / "crds"
MODELS = "/models"  # where the Ray pods see the factory's model directory
HEAD_TIMEOUT_S = 300.0
SERVE_TIMEOUT_S = 600.0
# One core and a little memory per Ray pod: the node has two cores, shared with the control plane.
RAY_POD = {"cpu": "1", "memory": "3Gi"}


def with_model_volume(body: dict[str, Any], models: Path) -> dict[str, Any]:
    """The test bed's one addition to the rendered RayService: the host's model directory at MODELS."""
    cluster = body["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        spec["volumes"].append({"name": "models", "hostPath": {"path": str(models), "type": "Directory"}})
        for container in spec["containers"]:
            container["imagePullPolicy"] = "Never"
            container["volumeMounts"].append({"name": "models", "mountPath": MODELS, "readOnly": True})
    return body


def champion_deployment(namespace: str, gguf) -> ModelDeployment:
    """A ModelDeployment whose status names its champion, as the operator writes it before rendering."""
    artifact = {
        "uri": f"{MODELS}/{Path(gguf.path).name}",
        "digest": gguf.digest,
        "quantization": gguf.quantization,
        "sizeBytes": gguf.size_bytes,
    }
    deployment = ModelDeployment.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "medical", "namespace": namespace, "generation": 1},
            "spec": {
                "domain": "medical",
                "pool": "cpu",
                "model": {"version": "v1", "artifact": artifact},
                "analysis": {"benchmarks": [{"name": "medical-routing"}]},
            },
        }
    )
    champion = RevisionStatus(revision="medical-v1", version="v1", artifact=deployment.spec.model.artifact)
    return deployment.model_copy(
        update={"status": ModelDeploymentStatus(phase=Phase.PENDING, champion=champion)}
    )


def test_kuberay_runs_the_rendered_rayservice_until_serve_answers(
    node: Node, kuberay: KubeRay, smoke_artifacts
) -> None:
    gguf = smoke_artifacts["medical"]  # Q8_0, the factory's serving quantization
    node.load_image(binaries.image_archive("pool"))
    node.plane.apply(BATON_CRDS)
    namespace = f"kuberay-{uuid.uuid4().hex[:6]}"
    assert node.plane.kubectl("create", "namespace", namespace).returncode == 0

    def report() -> str:
        lines = [
            node.plane.kubectl(
                "get", "rayservices,rayclusters,pods,services", "-n", namespace, "-o", "wide"
            ).stdout
        ]
        lines.append(json.dumps(node.plane.get("rayservice", "cpu", "-n", namespace).get("status"), indent=1))
        for pod in node.plane.get("pods", "-n", namespace, "-l", "ray.io/node-type=head").get("items", []):
            name = pod["metadata"]["name"]
            lines.append(json.dumps(pod.get("status", {}).get("containerStatuses"), indent=1))
            lines.append(node.plane.kubectl("logs", "-n", namespace, name, "--tail=60").stdout)
        lines.append(kuberay.log_tails())
        return "\n".join(lines)

    pool_doc = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "cpu", "namespace": namespace},
        "spec": {"workers": 1, "workerResources": RAY_POD},
    }
    created = node.plane.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(pool_doc))
    assert created.returncode == 0, created.stderr
    pool = json.loads(created.stdout)
    rendered = render_pool(ModelPool.model_validate(pool), [champion_deployment(namespace, gguf)])
    assert not rendered.unschedulable
    body = with_model_volume(ray_service(pool, rendered), Path(gguf.path).parent)

    began = time.monotonic()
    applied = node.plane.kubectl("apply", "-f", "-", input=json.dumps(body))
    assert applied.returncode == 0, applied.stderr  # KubeRay's own CRD accepts what baton renders
    seconds: dict[str, float] = {}

    def head_pod() -> dict[str, Any] | None:
        pods = node.plane.get("pods", "-n", namespace, "-l", "ray.io/node-type=head").get("items", [])
        return pods[0] if pods else None

    cluster = wait_for(
        lambda: node.plane.get("rayclusters", "-n", namespace).get("items"),
        "KubeRay made no RayCluster",
        report,
        HEAD_TIMEOUT_S,
    )
    seconds["RayCluster created"] = time.monotonic() - began
    assert cluster[0]["metadata"]["ownerReferences"][0]["kind"] == "RayService"
    head = wait_for(
        lambda: (pod := head_pod()) and pod["status"].get("phase") == "Running" and pod,
        "no Running head pod",
        report,
        HEAD_TIMEOUT_S,
    )
    seconds["head pod Running"] = time.monotonic() - began
    assert head["spec"]["nodeName"] == "baton-node"
    assert head["spec"]["containers"][0]["image"] == DEFAULT_RAY_IMAGE  # the pool image, imported above

    def head_ready() -> bool:
        pod = head_pod() or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod.get("status", {}).get("conditions", [])
        )

    # KubeRay's readiness probe on the head asks the raylet and the GCS: Ray's head has started.
    wait_for(head_ready, "the head pod never became Ready", report, HEAD_TIMEOUT_S)
    seconds["head pod Ready"] = time.monotonic() - began

    applications = [app["name"] for app in serve_config(body)["applications"]]

    def serving() -> dict[str, Any] | None:
        service = node.plane.get("rayservice", "cpu", "-n", namespace)
        statuses = ((service.get("status") or {}).get("activeServiceStatus") or {}).get(
            "applicationStatuses"
        ) or {}
        failed = {
            name: app for name, app in statuses.items() if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY")
        }
        assert not failed, f"{failed}\n{report()}"
        running = all(statuses.get(name, {}).get("status") == "RUNNING" for name in applications)
        return service if running else None

    service = wait_for(serving, "KubeRay never reported every application RUNNING", report, SERVE_TIMEOUT_S)
    seconds["Serve applications RUNNING (KubeRay status)"] = time.monotonic() - began

    head_ip = head_pod()["status"]["podIP"]
    # authOptions.mode=token as rendered: KubeRay deployed with its token; without one the dashboard refuses.
    refused = httpx.get(f"http://{head_ip}:8265/api/serve/applications/", timeout=30)
    assert refused.status_code in (401, 403), refused.status_code
    endpoint = f"http://{head_ip}:8000"

    def engines() -> dict[str, Any] | None:
        try:
            revisions = httpx.get(f"{endpoint}/v1/baton/revisions", timeout=30).json().get("medical", {})
        except (httpx.TransportError, json.JSONDecodeError):
            return None
        return revisions if revisions.get("medical-v1", {}).get("ready") else None

    revisions = wait_for(engines, "the ingress never called medical-v1 ready", report, SERVE_TIMEOUT_S)
    seconds["model ready"] = time.monotonic() - began
    health, _ = observe_revisions("medical", service, engines=revisions)
    assert health["medical-v1"].state == RevisionState.READY, health
    answer = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json={"model": "medical", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 8},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0
    print("\nKubeRay on the test bed, seconds from RayService applied:", json.dumps(seconds, indent=1))

    deleted = node.plane.kubectl("delete", "namespace", namespace, "--timeout=180s")
    assert deleted.returncode == 0, deleted.stderr + report()
