"""KubeRay's real operator runs the RayService baton renders for a ModelPool, on the test bed's node.

Until these tests, `baton pool-runner` played KubeRay's part: no RayService baton renders had been read
by KubeRay and no Ray head had run in a pod. Here the path of a cluster: the RayService (rendered by
`baton.k8s.rayservice.ray_service` for a real ModelPool, its owner) -> KubeRay's RayCluster -> a head
and a worker pod of the pool image on the node, the worker joined to the head by the head Service's
cluster DNS name -> `serveConfigV2` deployed by KubeRay through the head's dashboard (via the API
server's service proxy) -> KubeRay's RayService status reports the applications RUNNING, which is what
baton reads (`observe_revisions`) -> the ingress answers a chat completion, through the Serve Service's
ClusterIP (kube-proxy) as a client in the cluster would.

Then what a rollout does to a running pool: a candidate revision, a canary weight, the promotion and
the removal of the old revision, each one new `serveConfigV2` applied to the same RayService, under
client load. KubeRay applies them to the same RayCluster (no new cluster, no pod restarted) and no
request fails.

The factory's GGUFs reach the pods through a hostPath volume at /models: the test bed has one node,
so the host's model directory is the node's. A cluster uses a model volume or an artifact URI.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
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
from baton_models import catalog
from baton_serving.config import FetchPolicy
from baton_serving.wire import REVISIONS_PATH
from tests.e2e.test_operator_e2e import Traffic
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
CHAT = {"model": "medical", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 4}


def with_model_volume(body: dict[str, Any]) -> dict[str, Any]:
    """The test bed's one addition to the rendered RayService: the host's model directory at MODELS."""
    cluster = body["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        spec = group["template"]["spec"]
        spec["volumes"].append(
            {"name": "models", "hostPath": {"path": str(catalog.cache_root()), "type": "Directory"}}
        )
        for container in spec["containers"]:
            container["imagePullPolicy"] = "Never"
            container["volumeMounts"].append({"name": "models", "mountPath": MODELS, "readOnly": True})
    return body


def revision(version: str, gguf: catalog.Artifact) -> RevisionStatus:
    """A revision of `medical` serving `gguf`, as the pods see it under MODELS."""
    artifact = {
        "uri": f"{MODELS}/{Path(gguf.path).relative_to(catalog.cache_root())}",
        "digest": gguf.digest,
        "quantization": gguf.quantization,
        "sizeBytes": gguf.size_bytes,
    }
    return RevisionStatus.model_validate(
        {"revision": f"medical-{version}", "version": version, "artifact": artifact}
    )


def deployment(namespace: str, champion: RevisionStatus, **status: Any) -> ModelDeployment:
    """The ModelDeployment `medical` with the status the operator writes before rendering its pool."""
    spec = ModelDeployment.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "medical", "namespace": namespace, "generation": 1},
            "spec": {
                "domain": "medical",
                "pool": "cpu",
                "model": {
                    "version": champion.version,
                    "artifact": champion.artifact.model_dump(by_alias=True, exclude_none=True),
                },
                "analysis": {"benchmarks": [{"name": "medical-routing"}]},
            },
        }
    )
    status.setdefault("phase", Phase.PENDING)
    return spec.model_copy(update={"status": ModelDeploymentStatus(champion=champion, **status)})


class RayPool:
    """The ModelPool `cpu` in a namespace of its own, its RayService rendered as the operator does."""

    def __init__(self, node: Node, kuberay: KubeRay) -> None:
        self.node, self.kuberay = node, kuberay
        self.namespace = f"kuberay-{uuid.uuid4().hex[:6]}"
        node.load_image(binaries.image_archive("pool"))
        node.plane.apply(BATON_CRDS)
        assert node.plane.kubectl("create", "namespace", self.namespace).returncode == 0
        pool_doc = {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": "cpu", "namespace": self.namespace},
            "spec": {"workers": 1, "workerResources": RAY_POD},
        }
        created = self.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(pool_doc))
        self.pool = json.loads(created)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.node.plane.kubectl(*args, input=input)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return self.node.plane.get(*args, "-n", self.namespace)

    def apply(self, deployment: ModelDeployment) -> dict[str, Any]:
        """Renders the pool for `deployment` and applies its RayService (what the operator writes)."""
        # The chart's default policy: the pods read models under the model volume only.
        rendered = render_pool(
            ModelPool.model_validate(self.pool), [deployment], FetchPolicy(local_roots=[MODELS])
        )
        assert not rendered.unschedulable
        body = with_model_volume(ray_service(self.pool, rendered))
        self.kubectl("apply", "-f", "-", input=json.dumps(body))  # KubeRay's own CRD accepts it
        return body

    def pods(self, node_type: str) -> list[dict[str, Any]]:
        return self.get("pods", "-l", f"ray.io/node-type={node_type}").get("items", [])

    def ready(self, node_type: str) -> bool:
        pods = self.pods(node_type)
        return bool(pods) and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))
            for pod in pods
        )

    def serving(self, applications: list[str]) -> dict[str, Any] | None:
        """The RayService once KubeRay reports exactly `applications`, each RUNNING; fails on a failed one."""
        service = self.get("rayservice", "cpu")
        statuses = ((service.get("status") or {}).get("activeServiceStatus") or {}).get(
            "applicationStatuses"
        ) or {}
        failed = {
            name: app for name, app in statuses.items() if app.get("status") in ("DEPLOY_FAILED", "UNHEALTHY")
        }
        assert not failed, f"{failed}\n{self.report()}"
        running = sorted(statuses) == sorted(applications) and all(
            app.get("status") == "RUNNING" for app in statuses.values()
        )
        return service if running else None

    def ray_nodes(self) -> int:
        """Alive nodes of the Ray cluster, as its GCS (on the head) counts them."""
        head = self.pods("head")[0]["metadata"]["name"]
        script = (
            "import ray; ray.init(address='auto', log_to_driver=False);"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = self.node.plane.kubectl("exec", "-n", self.namespace, head, "--", "python", "-c", script)
        return int(out.stdout.split()[-1]) if out.returncode == 0 and out.stdout.split() else 0

    def endpoint(self) -> str:
        """KubeRay's Serve Service (`<name>-serve-svc`) by its ClusterIP (routed by the node's kube-proxy)."""
        service = self.get("service", "cpu-serve-svc")
        return f"http://{service['spec']['clusterIP']}:8000"

    def engines(self, endpoint: str, revisions: set[str]) -> dict[str, Any] | None:
        try:
            reported = httpx.get(f"{endpoint}{REVISIONS_PATH}", timeout=30).json().get("medical", {})
        except (httpx.TransportError, json.JSONDecodeError):
            return None
        ready = {name for name, engine in reported.items() if engine.get("ready")}
        return reported if ready == revisions else None

    def report(self) -> str:
        lines = [
            self.node.plane.kubectl(
                "get", "rayservices,rayclusters,pods,services", "-n", self.namespace, "-o", "wide"
            ).stdout
        ]
        lines.append(json.dumps(self.get("rayservice", "cpu").get("status"), indent=1))
        for pod in self.get("pods").get("items", []):
            name = pod["metadata"]["name"]
            lines.append(json.dumps(pod.get("status", {}).get("containerStatuses"), indent=1))
            lines.append(self.node.plane.kubectl("logs", "-n", self.namespace, name, "--tail=40").stdout)
        lines.append(self.kuberay.log_tails())
        return "\n".join(lines)

    def delete(self) -> None:
        deleted = self.node.plane.kubectl("delete", "namespace", self.namespace, "--timeout=180s")
        assert deleted.returncode == 0, deleted.stderr + self.report()


def test_kuberay_runs_the_rendered_rayservice_until_serve_answers(
    node: Node, kuberay: KubeRay, smoke_artifacts
) -> None:
    ray = RayPool(node, kuberay)
    champion = revision("v1", smoke_artifacts["medical"])  # Q8_0, the factory's serving quantization
    began = time.monotonic()
    body = ray.apply(deployment(ray.namespace, champion))
    seconds: dict[str, float] = {}

    cluster = wait_for(
        lambda: ray.get("rayclusters").get("items"), "KubeRay made no RayCluster", ray.report, HEAD_TIMEOUT_S
    )
    seconds["RayCluster created"] = time.monotonic() - began
    assert cluster[0]["metadata"]["ownerReferences"][0]["kind"] == "RayService"
    head = wait_for(
        lambda: (pods := ray.pods("head")) and pods[0]["status"].get("phase") == "Running" and pods[0],
        "no Running head pod",
        ray.report,
        HEAD_TIMEOUT_S,
    )
    seconds["head pod Running"] = time.monotonic() - began
    assert head["spec"]["nodeName"] == "baton-node"
    assert head["spec"]["containers"][0]["image"] == DEFAULT_RAY_IMAGE  # the pool image, imported above
    # KubeRay's readiness probe on the head asks the raylet and the GCS: Ray's head has started.
    wait_for(lambda: ray.ready("head"), "the head pod never became Ready", ray.report, HEAD_TIMEOUT_S)
    seconds["head pod Ready"] = time.monotonic() - began
    # The worker's `wait-gcs-ready` init container resolves the head Service by its cluster DNS name.
    wait_for(lambda: ray.ready("worker"), "the worker pod never became Ready", ray.report, HEAD_TIMEOUT_S)
    seconds["worker pod Ready"] = time.monotonic() - began
    wait_for(lambda: ray.ray_nodes() == 2, "the worker never joined the head", ray.report, HEAD_TIMEOUT_S)
    seconds["worker joined (2 Ray nodes)"] = time.monotonic() - began

    applications = [app["name"] for app in serve_config(body)["applications"]]
    service = wait_for(
        lambda: ray.serving(applications),
        "KubeRay never reported every application RUNNING",
        ray.report,
        SERVE_TIMEOUT_S,
    )
    seconds["Serve applications RUNNING (KubeRay status)"] = time.monotonic() - began

    head_ip = ray.pods("head")[0]["status"]["podIP"]
    # authOptions.mode=token as rendered: KubeRay deployed with its token; without one the dashboard refuses.
    refused = httpx.get(f"http://{head_ip}:8265/api/serve/applications/", timeout=30)
    assert refused.status_code in (401, 403), refused.status_code
    endpoint = wait_for(
        lambda: ray.get("service", "cpu-serve-svc") and ray.endpoint(),
        "no Serve Service",
        ray.report,
        SERVE_TIMEOUT_S,
    )
    revisions = wait_for(
        lambda: ray.engines(endpoint, {"medical-v1"}),
        "the ingress never called medical-v1 ready",
        ray.report,
        SERVE_TIMEOUT_S,
    )
    seconds["model ready (through the Serve Service)"] = time.monotonic() - began
    health, _ = observe_revisions("medical", service, engines=revisions)
    assert health["medical-v1"].state == RevisionState.READY, health
    answer = httpx.post(f"{endpoint}/v1/chat/completions", json=CHAT, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0
    print("\nKubeRay on the test bed, seconds from RayService applied:", json.dumps(seconds, indent=1))
    ray.delete()


def answered(traffic: Traffic, revision: str, count: int, diagnose: Callable[[], str]) -> None:
    """Waits until `revision` has answered `count` more of the traffic's requests."""
    wanted = traffic.revisions[revision] + count
    wait_for(
        lambda: traffic.revisions[revision] >= wanted,
        f"{revision} never answered {count} requests",
        diagnose,
        SERVE_TIMEOUT_S,
    )


def test_revisions_and_weights_change_in_place_under_load(
    node: Node, kuberay: KubeRay, smoke_artifacts
) -> None:
    ray = RayPool(node, kuberay)
    v1 = revision("v1", smoke_artifacts["medical"])
    v2 = revision("v2", smoke_artifacts["software"])  # another model file, another digest
    body = ray.apply(deployment(ray.namespace, v1))
    applications = [app["name"] for app in serve_config(body)["applications"]]
    wait_for(
        lambda: ray.serving(applications), "Serve never RUNNING", ray.report, HEAD_TIMEOUT_S + SERVE_TIMEOUT_S
    )
    wait_for(lambda: ray.ray_nodes() == 2, "the worker never joined the head", ray.report, HEAD_TIMEOUT_S)
    endpoint = wait_for(
        lambda: ray.get("service", "cpu-serve-svc") and ray.endpoint(),
        "no Serve Service",
        ray.report,
        SERVE_TIMEOUT_S,
    )
    wait_for(
        lambda: ray.engines(endpoint, {"medical-v1"}), "medical-v1 never ready", ray.report, SERVE_TIMEOUT_S
    )

    def identity() -> dict[str, Any]:
        """What an in-place update keeps: the RayCluster and every Ray pod, none restarted."""
        clusters = ray.get("rayclusters")["items"]
        pods = ray.pods("head") + ray.pods("worker")
        return {
            "clusters": [(c["metadata"]["name"], c["metadata"]["uid"]) for c in clusters],
            "pods": sorted(
                (p["metadata"]["uid"], sum(c["restartCount"] for c in p["status"]["containerStatuses"]))
                for p in pods
            ),
        }

    before = identity()
    assert len(before["clusters"]) == 1 and len(before["pods"]) == 2, before
    steps = [
        # The candidate at 30 % of the traffic: a new engine application and new ingress weights.
        (
            dict(phase=Phase.CANARY, candidate=v2, canary_weight=30),
            {"medical-v1", "medical-v2"},
            "medical-v2",
        ),
        # Promoted and baking: the new champion takes all traffic, the old one stays loaded and mirrored.
        (dict(phase=Phase.BAKING, previous=v1), {"medical-v1", "medical-v2"}, "medical-v2"),
        # After the bake: the old revision's application is removed.
        (dict(phase=Phase.PROMOTED), {"medical-v2"}, "medical-v2"),
    ]
    with Traffic(endpoint, limit=100_000) as traffic:
        answered(traffic, "medical-v1", 5, ray.report)
        for status, serving, answering in steps:
            champion = v2 if status["phase"] != Phase.CANARY else v1
            body = ray.apply(deployment(ray.namespace, champion, **status))
            applications = [app["name"] for app in serve_config(body)["applications"]]
            wait_for(
                lambda apps=applications: ray.serving(apps),
                f"{status['phase']}: Serve never RUNNING",
                ray.report,
                SERVE_TIMEOUT_S,
            )
            wait_for(
                lambda serving=serving: ray.engines(endpoint, serving),
                f"{status['phase']}: {serving} never ready",
                ray.report,
                SERVE_TIMEOUT_S,
            )
            answered(traffic, answering, 5, ray.report)
        after_promotion = traffic.revisions.copy()
        answered(traffic, "medical-v2", 10, ray.report)
    answers = traffic.revisions
    assert traffic.failures == [], traffic.failures[:5]
    assert answers["medical-v1"] >= 5 and answers["medical-v2"] >= 20, answers
    # Once promoted, no request reached the old revision.
    assert answers["medical-v1"] == after_promotion["medical-v1"], (after_promotion, answers)
    assert identity() == before
    print(f"\nin-place updates under load: {dict(answers)} answered, {len(traffic.failures)} failed")
    ray.delete()
