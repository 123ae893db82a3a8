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

The factory's GGUFs reach the pods as a platform team's would: the ModelPool's model volume, a claim
bound to a PersistentVolume on the node's model directory, mounted read-only at /models; and http
artifacts from a mirror running in the cluster (a pod of the pool image behind a Service), which the
pods download into the pool's cache claim after checking the digest. Clients send a key of the pool's
keySecrets; the operator's benchmark key comes from the Secret it writes beside the pool. The last test
runs `baton operator` itself against the pool: it renders all of that from the ModelPool's spec.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from baton.api import ModelDeployment, ModelPool
from baton.api.deployment import ModelDeploymentStatus, Phase, RevisionStatus
from baton.api.pool import ARTIFACT_CACHE_PATH, DEFAULT_RAY_IMAGE, MODELS_PATH
from baton.k8s.rayservice import (
    benchmark_key,
    benchmark_secret,
    benchmark_secret_name,
    observe_revisions,
    ray_service,
    serve_config,
)
from baton.rollout.model import RevisionState
from baton.rollout.render import render_pool
from baton_models import catalog
from baton_models.benchmarks import benchmarks
from baton_serving.wire import REVISIONS_PATH
from tests.integration.operator.fixtures import Process
from tests.testbed import binaries
from tests.testbed.kuberay import KubeRay
from tests.testbed.node import Node
from tests.testbed.processes import wait_for
from tests.testbed.workloads import (
    CLIENT,
    Traffic,
    artifact,
    artifact_server,
    artifact_url,
    candidate_document,
    delete_namespace,
    deployment_document,
    in_cluster_policy,
    mirror,
    on_volume,
    pool_document,
    remove_storage,
    storage,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BATON_CRDS = REPO / "manifests" / "crds"
HEAD_TIMEOUT_S = 300.0
SERVE_TIMEOUT_S = 600.0
CHAT = {"model": "medical", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 4}
# The operator's own secret (its benchmark key derives from it).
OPERATOR_SECRET = b"o" * 48


def revision(version: str, gguf: catalog.Artifact, uri: str | None = None) -> RevisionStatus:
    """A revision of `medical` serving `gguf`, from the models claim unless `uri` names it elsewhere."""
    pinned = artifact(uri or on_volume(gguf), gguf)
    return RevisionStatus.model_validate(
        {"revision": f"medical-{version}", "version": version, "artifact": pinned}
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
    """The ModelPool `cpu` in a namespace of its own, its RayService rendered as the operator does.

    Its models come from a claim bound to the factory's model directory on the node, downloads go to
    a claim of their own, and its keys are the test's client key and the operator's benchmark key.
    """

    def __init__(self, node: Node, kuberay: KubeRay, workdir: Path) -> None:
        self.node, self.kuberay = node, kuberay
        self.namespace = f"kuberay-{uuid.uuid4().hex[:6]}"
        node.load_image(binaries.image_archive("pool"))
        node.plane.apply(BATON_CRDS)
        assert node.plane.kubectl("create", "namespace", self.namespace).returncode == 0
        document = pool_document()
        document["metadata"]["namespace"] = self.namespace
        created = self.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(document))
        self.pool = json.loads(created)
        key = benchmark_key(OPERATOR_SECRET, self.namespace, "cpu")
        self.benchmark_headers = {"Authorization": f"Bearer {key}"}
        objects = [*storage(self.namespace, workdir / "downloads"), benchmark_secret(self.pool, key)]
        self.apply_objects([*objects, *artifact_server(self.namespace)])
        self.policy = in_cluster_policy(self.namespace)

    def apply_objects(self, objects: list[dict[str, Any]]) -> None:
        self.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        )

    def kubectl(self, *args: str, input: str | None = None) -> str:
        result = self.node.plane.kubectl(*args, input=input)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return self.node.plane.get(*args, "-n", self.namespace)

    def apply(self, deployment: ModelDeployment) -> dict[str, Any]:
        """Renders the pool for `deployment` and applies its RayService (what the operator writes)."""
        rendered = render_pool(ModelPool.model_validate(self.pool), [deployment], self.policy)
        assert not rendered.unschedulable
        body = ray_service(self.pool, rendered, keys=True)
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
        deleted = delete_namespace(self.node, self.namespace)
        assert deleted.returncode == 0, deleted.stderr + self.report()
        remove_storage(self.node, self.namespace)


@pytest.fixture
def ray(node: Node, kuberay: KubeRay, tmp_path: Path) -> Iterator[RayPool]:
    """The pool, deleted afterwards whatever happened: its pods hold the node's two cores."""
    pool = RayPool(node, kuberay, tmp_path)
    yield pool
    pool.delete()


def test_kuberay_runs_the_rendered_rayservice_until_serve_answers(ray: RayPool, smoke_artifacts) -> None:
    """The champion's file comes from the pool's model volume (a claim on the node's model directory);
    clients need a key of the pool's keySecrets; then two revisions download one file from the
    in-cluster mirror: the first verifies it into the cache claim, the second reuses it."""
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
    volumes = {volume["name"]: volume for volume in head["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    assert not any("hostPath" in volume for volume in volumes.values())  # the test added none
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
    # The door, through the Serve Service: no key 401, the client key of the pool's Secret 200.
    refused = httpx.post(f"{endpoint}/v1/chat/completions", json=CHAT, timeout=120)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_api_key", refused.text
    wrong = httpx.post(
        f"{endpoint}/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer " + "x" * 40}
    )
    assert wrong.status_code == 401, wrong.text
    answer = httpx.post(f"{endpoint}/v1/chat/completions", json=CHAT, headers=CLIENT, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["completion_tokens"] > 0
    # The operator's key (the pool's own, from its Secret) may pin a revision.
    pinned = httpx.post(
        f"{endpoint}/v1/chat/completions",
        json=CHAT,
        headers={**ray.benchmark_headers, "X-Baton-Revision": "medical-v1"},
        timeout=120,
    )
    assert pinned.status_code == 200 and pinned.headers["X-Baton-Revision"] == "medical-v1", pinned.text

    # An http(s) artifact: the pod downloads it from the in-cluster mirror (by its Service's cluster
    # DNS name, opted into the fetch policy), checks its digest and serves it. A second revision of
    # the same file finds it verified in the cache claim (possibly from the other pod).
    gguf = smoke_artifacts["software"]
    wait_for(lambda: ray.get("pod", "artifacts").get("status", {}).get("podIP"), "no mirror", ray.report, 120)
    fetched: dict[str, float] = {}
    for name in ("web", "web-again"):
        candidate = revision(name, gguf, uri=artifact_url(ray.namespace, gguf))
        ray.apply(
            deployment(ray.namespace, champion, phase=Phase.CANARY, candidate=candidate, canary_weight=0)
        )
        wanted = {"medical-v1", candidate.revision}
        engines = wait_for(
            lambda wanted=wanted: ray.engines(endpoint, wanted),
            f"{wanted} never ready",
            ray.report,
            SERVE_TIMEOUT_S,
        )
        fetched[candidate.revision] = engines[candidate.revision]["artifact_seconds"]
        pinned = httpx.post(
            f"{endpoint}/v1/chat/completions",
            json=CHAT,
            headers={**ray.benchmark_headers, "X-Baton-Revision": candidate.revision},
            timeout=120,
        )
        assert pinned.headers.get("X-Baton-Revision") == candidate.revision, pinned.text
    cached = ray.node.plane.kubectl(
        "exec", "-n", ray.namespace, ray.pods("head")[0]["metadata"]["name"], "--",
        "ls", f"{ARTIFACT_CACHE_PATH}/sha256",
    )  # fmt: skip
    assert cached.stdout.split() == [f"{gguf.digest.removeprefix('sha256:')}.gguf"], cached
    print("\nKubeRay on the test bed, seconds from RayService applied:", json.dumps(seconds, indent=1))
    print(f"artifact of {gguf.size_bytes} bytes fetched and verified in the pod, seconds: {fetched}")


def answered(traffic: Traffic, revision: str, count: int, diagnose: Callable[[], str]) -> None:
    """Waits until `revision` has answered `count` more of the traffic's requests."""
    wanted = traffic.revisions[revision] + count
    wait_for(
        lambda: traffic.revisions[revision] >= wanted,
        f"{revision} never answered {count} requests",
        diagnose,
        SERVE_TIMEOUT_S,
    )


def test_revisions_and_weights_change_in_place_under_load(ray: RayPool, smoke_artifacts) -> None:
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
    with Traffic(endpoint, limit=100_000, headers=CLIENT) as traffic:
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


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Processes a test started, stopped at its end (after the fixtures it requested later)."""
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def operator_namespace(node: Node, kuberay: KubeRay, processes: list[Process]) -> Iterator[str]:
    """A namespace for the operator's pool, deleted afterwards (the operator still running takes its
    finalizer off the pool) with the claims' volumes."""
    namespace = f"operator-{uuid.uuid4().hex[:6]}"
    assert node.plane.kubectl("create", "namespace", namespace).returncode == 0
    yield namespace
    deleted = delete_namespace(node, namespace)
    # The namespace's conditions name what is left in it and whose finalizers hold it.
    left = node.plane.kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.conditions}").stdout
    assert deleted.returncode == 0, f"{deleted.stderr}{left}"
    remove_storage(node, namespace)


def test_the_operator_serves_from_the_model_volume_behind_keys_and_fails_only_bad_candidates(
    node: Node, processes: list[Process], operator_namespace: str, smoke_artifacts, tmp_path
) -> None:
    """`baton operator` (a host process with the cluster's DNS, as the chart's pod would resolve) renders
    the pool itself: model volume, cache claim and keys from the ModelPool's spec, its benchmark key in
    a Secret it writes. A candidate whose download has the wrong digest and one whose file is missing
    from the volume are Failed with the reason while the champion serves every client request; a
    candidate from the in-cluster mirror is downloaded, verified and benchmarked with the operator's key."""
    node.load_image(binaries.image_archive("pool"))
    node.plane.apply(BATON_CRDS)
    namespace = operator_namespace
    secret_file = tmp_path / "operator-secret"
    secret_file.write_bytes(OPERATOR_SECRET)
    policy = in_cluster_policy(namespace).model_dump(mode="json", by_alias=True)
    argv = node.with_cluster_dns(
        [
            sys.executable, "-m", "baton.cli", "operator", "--namespace", namespace,
            # The Lease lives outside the pool's namespace, which the test deletes at its end.
            "--lease-namespace", "default", "--fetch-policy", json.dumps(policy),
            "--benchmark-key-file", secret_file,
        ]
    )  # fmt: skip
    operator = Process(argv, tmp_path / "operator.log", node.plane.env())
    processes.append(operator)

    def get(*args: str) -> dict[str, Any]:
        return node.plane.get(*args, "-n", namespace)

    def report() -> str:
        pods = node.plane.kubectl("get", "pods,pvc,rayservices", "-n", namespace, "-o", "wide").stdout
        statuses = {
            kind: [item.get("status") for item in get(kind).get("items", [])]
            for kind in ("modeldeployments", "modelcandidates")
        }
        return f"{pods}\n{json.dumps(statuses, indent=1)[-4000:]}\n--- operator ---\n{operator.tail()}"

    (benchmark,) = [b for b in benchmarks("medical", 16) if b.metadata.name == "medical-routing"]
    champion = smoke_artifacts["medical"]
    documents = [
        *storage(namespace, tmp_path / "downloads"),
        *artifact_server(namespace),
        pool_document(),
        benchmark.to_wire(),
        deployment_document(
            artifact(on_volume(champion), champion), min_samples=10, max_tokens=benchmark.spec.max_tokens
        ),
    ]
    applied = node.plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(documents))
    assert applied.returncode == 0, applied.stderr
    began = time.monotonic()
    wait_for(
        lambda: get("modeldeployment", "medical").get("status", {}).get("phase") == "Serving",
        "the champion never served",
        report,
        HEAD_TIMEOUT_S + SERVE_TIMEOUT_S,
    )
    print(
        "\noperator: ModelPool applied -> champion Serving from the model volume:",
        f"{time.monotonic() - began:.0f} s",
    )
    secret = get("secret", benchmark_secret_name("cpu"), "--show-managed-fields")
    assert [field["manager"] for field in secret["metadata"]["managedFields"]] == ["baton-operator"]
    endpoint = f"http://{get('service', 'cpu-serve-svc')['spec']['clusterIP']}:8000"

    def status_without_key() -> int | None:
        """The answer to a request with no key, once the Service routes (KubeRay labels serving pods)."""
        try:
            return httpx.post(f"{endpoint}/v1/chat/completions", json=CHAT, timeout=60).status_code
        except httpx.TransportError:
            return None

    assert wait_for(status_without_key, "the Serve Service never answered", report, SERVE_TIMEOUT_S) == 401
    assert (
        httpx.post(f"{endpoint}/v1/chat/completions", json=CHAT, headers=CLIENT, timeout=60).status_code
        == 200
    )

    def candidate_status(name: str) -> dict[str, Any]:
        return get("modelcandidate", f"medical-{name}").get("status") or {}

    software = smoke_artifacts["software"]
    url = artifact_url(namespace, software)
    bad = [
        (candidate_document("wrong", url, software, digest="sha256:" + "f" * 64), "digest mismatch"),
        (candidate_document("missing", f"{MODELS_PATH}/no-such-model.gguf", software), "no such file"),
    ]
    with Traffic(endpoint, headers=CLIENT) as traffic:
        for document, reason in bad:
            name = document["spec"]["version"]
            assert (
                node.plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(document)).returncode
                == 0
            )
            failed = wait_for(
                lambda name=name: candidate_status(name).get("phase") == "Failed" and candidate_status(name),
                f"candidate {name} never Failed",
                report,
                SERVE_TIMEOUT_S,
            )
            assert reason in failed["decision"]["message"], failed
            assert get("modeldeployment", "medical")["status"]["champion"]["version"] == "v1"
        # A good download, benchmarked through the Serve Service with the operator's own key (which
        # alone may pin the candidate): scores on every item of the suite.
        good = candidate_document("web", url, software)
        assert node.plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(good)).returncode == 0
        scored = wait_for(
            lambda: candidate_status("web").get("scores"),
            "candidate web was never benchmarked",
            report,
            SERVE_TIMEOUT_S,
        )
    (scores,) = scored
    assert scores["benchmark"] == "medical-routing" and scores["items"] == len(benchmark.spec.inline), scores
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.revisions["medical-v1"] > 0, traffic.revisions


def test_a_namespace_scoped_operator_releases_its_pool_when_the_namespace_is_deleted(
    node: Node, processes: list[Process], tmp_path
) -> None:
    """`baton operator --namespace` (the chart's `operator.watchNamespace`) takes kopf's finalizer off its
    ModelPool when the whole namespace is deleted, so the namespace goes."""
    node.plane.apply(BATON_CRDS)
    node.plane.apply(binaries.kuberay_manifests() / "crds", server_side=True)
    namespace = f"scoped-{uuid.uuid4().hex[:6]}"
    assert node.plane.kubectl("create", "namespace", namespace).returncode == 0
    argv = [
        sys.executable, "-m", "baton.cli", "operator", "--namespace", namespace,
        "--lease-namespace", "default", "--no-auth",
    ]  # fmt: skip
    operator = Process(argv, tmp_path / "operator.log", node.plane.env())
    processes.append(operator)
    # A pod in the namespace: its deletion comes first (ordered namespace deletion), the pool's after.
    node.load_image(binaries.image_archive("pool"))
    pool = {"apiVersion": "baton.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": "cpu"}, "spec": {}}
    documents = [pool, *mirror(namespace, "files", {"emptyDir": {}})]
    applied = node.plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(documents))
    assert applied.returncode == 0, applied.stderr

    def rendered() -> bool:
        """kopf's finalizer is on the pool and the operator rendered its RayService."""
        finalizers = node.plane.get("modelpool", "cpu", "-n", namespace).get("metadata", {}).get("finalizers")
        return bool(finalizers) and bool(node.plane.get("rayservice", "cpu", "-n", namespace))

    wait_for(rendered, "the operator never took the pool on", operator.tail, 120)
    wait_for(
        lambda: node.plane.get("pod", "files", "-n", namespace).get("status", {}).get("phase") == "Running",
        "the pod never ran",
        operator.tail,
        120,
    )
    deleted = node.plane.kubectl("delete", "namespace", namespace, "--timeout=60s", timeout=90)
    left = node.plane.kubectl("get", "namespace", namespace, "-o", "jsonpath={.status.conditions}").stdout
    assert deleted.returncode == 0, f"{deleted.stderr}{left}\n--- operator ---\n{operator.tail()}"
