"""The operator against the real kube-apiserver (no Ray): rendering, status, Events, GitOps safety, HA.

The test plays KubeRay's part where one is needed by writing a RayService's status itself, the way
KubeRay (or `baton pool-runner`) would; everything else is the real operator process.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import kubernetes
import pytest
import yaml

from baton.k8s.kube import Conflict, Kube
from baton.k8s.leader import LOST_LEADERSHIP_EXIT_CODE
from tests.integration.operator.fixtures import Cluster, Process, wait_for

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "0" * 64
TIMEOUT = 90.0


def pool_yaml(name: str = "cpu-small", memory: str = "8Gi") -> str:
    return f"""
apiVersion: baton.dev/v1alpha1
kind: ModelPool
metadata: {{name: {name}}}
spec: {{workers: 1, workerResources: {{cpu: "2", memory: {memory}}}, memoryHeadroomPercent: 0}}
"""


def deployment_yaml(name: str = "medical", pool: str = "cpu-small", size: int = 10_000_000) -> str:
    return f"""
apiVersion: baton.dev/v1alpha1
kind: ModelDeployment
metadata: {{name: {name}}}
spec:
  domain: medical
  pool: {pool}
  model:
    version: v1
    artifact:
      {{uri: "file:///models/{name}-v1.gguf", digest: "{DIGEST}", quantization: Q8_0, sizeBytes: {size}}}
  rollout:
    steps: [{{weight: 50, pause: 1s, minRequests: 0}}]
  analysis: {{ungated: true}}
"""


def directory_source_yaml(path: Path, extra: str = "") -> str:
    """A ModelSource `medical-drops` polling `path` every second for deployment `medical`."""
    return f"""
apiVersion: baton.dev/v1alpha1
kind: ModelSource
metadata: {{name: medical-drops}}
spec:
  deployment: medical
  directory: {{path: "{path}"}}
  pollInterval: 1s
{extra}"""


def play_kuberay(cluster: Cluster, namespace: str, pool: str = "cpu-small") -> dict:
    """Write the RayService status KubeRay would write once every application runs."""
    ray = cluster.get("rayservice", namespace, pool)
    assert ray is not None
    config = yaml.safe_load(ray["spec"]["serveConfigV2"])
    statuses = {app["name"]: {"status": "RUNNING", "message": ""} for app in config["applications"]}
    status = {
        "observedGeneration": ray["metadata"]["generation"],
        "serviceStatus": "Running",
        "numServeEndpoints": 1,
        "activeServiceStatus": {"applicationStatuses": statuses},
    }
    cluster.kubectl(
        "patch", "rayservice", pool, "--namespace", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": status}),
    )  # fmt: skip
    return config


def status_of(cluster: Cluster, namespace: str, name: str) -> dict:
    return (cluster.get("modeldeployment", namespace, name) or {}).get("status") or {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_deployment_is_rendered_served_and_reported(cluster: Cluster, namespace: str, start_operator) -> None:
    metrics_port = free_port()
    operator = start_operator("http://127.0.0.1:9", "--metrics-port", str(metrics_port))
    cluster.apply_text(namespace, pool_yaml() + "---" + deployment_yaml())

    ray = wait_for(
        "the pool's RayService with the champion's engine app",
        lambda: (r := cluster.get("rayservice", namespace, "cpu-small"))
        and "medical.medical-v1" in r["spec"]["serveConfigV2"]
        and r,
        TIMEOUT,
        diagnose=operator.tail,
    )  # fmt: skip
    owner = ray["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("ModelPool", "cpu-small", True)
    # The fence of the pool's Ray pods, accepted by the API server as rendered, before the RayService.
    fence = cluster.get("networkpolicy", namespace, "cpu-small-ray")
    assert fence is not None and fence["metadata"]["ownerReferences"] == ray["metadata"]["ownerReferences"]
    assert fence["spec"]["podSelector"] == {"matchLabels": {"baton.dev/pool": "cpu-small"}}
    pending = wait_for(
        "status Pending", lambda: status_of(cluster, namespace, "medical").get("phase"), TIMEOUT
    )
    assert pending == "Pending"

    play_kuberay(cluster, namespace)
    wait_for(
        "phase Serving",
        lambda: status_of(cluster, namespace, "medical").get("phase") == "Serving",
        TIMEOUT,
        diagnose=operator.tail,
    )
    status = status_of(cluster, namespace, "medical")
    assert status["champion"]["version"] == "v1" and status["champion"]["revision"] == "medical-v1"
    assert status["observedGeneration"] == 1
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["observedGeneration"] == 1
    assert status["endpoint"] == "http://127.0.0.1:9/v1"
    reasons = {event["reason"] for event in cluster.events(namespace, "medical")}
    assert "ChampionReady" in reasons

    pool = wait_for(
        "pool status",
        lambda: (cluster.get("modelpool", namespace, "cpu-small") or {}).get("status", {}).get("deployments"),
        TIMEOUT,
    )
    assert pool == 1
    printed = cluster.kubectl("get", "modeldeployments", "--namespace", namespace)
    assert "medical" in printed and "v1" in printed and "Serving" in printed

    # The rollout metrics the dashboards and alerts read come from the operator itself.
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    serving = f'baton_rollout_phase{{deployment="medical",namespace="{namespace}",phase="Serving"}} 1.0'
    assert serving in scrape
    assert f'baton_rollout_canary_weight{{deployment="medical",namespace="{namespace}"}} 0.0' in scrape


def test_the_operator_never_writes_spec(cluster: Cluster, namespace: str, start_operator) -> None:
    operator = start_operator()
    cluster.apply_text(namespace, pool_yaml() + "---" + deployment_yaml())
    wait_for(
        "status",
        lambda: status_of(cluster, namespace, "medical").get("champion"),
        TIMEOUT,
        diagnose=operator.tail,
    )
    play_kuberay(cluster, namespace)
    wait_for("Serving", lambda: status_of(cluster, namespace, "medical").get("phase") == "Serving", TIMEOUT)
    for kind, name in (("modeldeployment", "medical"), ("modelpool", "cpu-small")):
        body = cluster.get(kind, namespace, name)
        assert body is not None
        mine = [entry for entry in body["metadata"]["managedFields"] if entry["manager"] == "baton-operator"]
        assert mine, (
            f"{kind}: the operator wrote nothing (managedFields: {body['metadata']['managedFields']})"
        )
        for entry in mine:
            assert entry.get("subresource") == "status", entry
            assert "f:spec" not in entry.get("fieldsV1", {}), entry
        spec_writers = {
            e["manager"] for e in body["metadata"]["managedFields"] if "f:spec" in e.get("fieldsV1", {})
        }
        assert spec_writers <= {"kubectl-client-side-apply", "kubectl"}, spec_writers
    assert cluster.get("modeldeployment", namespace, "medical")["metadata"]["generation"] == 1


def test_a_full_pool_is_unschedulable(cluster: Cluster, namespace: str, start_operator) -> None:
    operator = start_operator()
    # A replica needs 1.2 x its file + 256 MiB (baton_serving.resources): 50 MB fits in 1 GiB, 2 GB does not.
    manifests = [pool_yaml("tiny", memory="1Gi"), deployment_yaml("fits", "tiny", 50_000_000)]
    manifests.append(deployment_yaml("huge", "tiny", 2_000_000_000))
    cluster.apply_text(namespace, "---".join(manifests))

    def unschedulable() -> dict | None:
        status = (cluster.get("modelpool", namespace, "tiny") or {}).get("status") or {}
        condition = {c["type"]: c for c in status.get("conditions", [])}.get("Unschedulable")
        return condition if condition and condition["status"] == "True" else None

    condition = wait_for("Unschedulable=True on the pool", unschedulable, TIMEOUT, diagnose=operator.tail)
    assert "huge-v1" in condition["message"] and condition["reason"] == "PoolMemoryFull"
    config = yaml.safe_load(cluster.get("rayservice", namespace, "tiny")["spec"]["serveConfigV2"])
    apps = {app["name"] for app in config["applications"]}
    assert "fits.fits-v1" in apps and "huge.huge-v1" not in apps

    def huge_ready_reason() -> str | None:
        conditions = status_of(cluster, namespace, "huge").get("conditions", [])
        return {c["type"]: c["reason"] for c in conditions}.get("Ready")

    wait_for(
        "huge's Ready condition to say Unschedulable", lambda: huge_ready_reason() == "Unschedulable", TIMEOUT
    )


def test_deleting_a_pool_deletes_its_ray_service(cluster: Cluster, namespace: str, start_operator) -> None:
    operator = start_operator()
    cluster.apply_text(namespace, pool_yaml() + "---" + deployment_yaml())
    wait_for(
        "RayService",
        lambda: cluster.get("rayservice", namespace, "cpu-small"),
        TIMEOUT,
        diagnose=operator.tail,
    )
    # The operator's finalizer must be on the pool before it goes: a pool deleted earlier leaves its
    # RayService to Kubernetes' garbage collector (owner reference), and the test bed runs none.
    wait_for(
        "the operator's finalizer on the pool",
        lambda: ((cluster.get("modelpool", namespace, "cpu-small") or {}).get("metadata") or {}).get(
            "finalizers"
        ),
        TIMEOUT,
        diagnose=operator.tail,
    )
    cluster.kubectl("delete", "modelpool", "cpu-small", "--namespace", namespace, "--wait=false")
    wait_for(
        "RayService and pool gone",
        lambda: (
            cluster.get("rayservice", namespace, "cpu-small") is None
            and cluster.get("networkpolicy", namespace, "cpu-small-ray") is None
            and cluster.get("modelpool", namespace, "cpu-small") is None
        ),
        TIMEOUT,
        diagnose=operator.tail,
    )


def standby_takes_over(cluster: Cluster, namespace: str, holder: str, standby: Process) -> None:
    """The standby takes the Lease from `holder` once it expires, and acts: it reconciles a new deployment."""
    wait_for(
        "the standby to take the lease",
        lambda: cluster.get("lease", namespace, "baton-operator")["spec"]["holderIdentity"] != holder,
        60,
        diagnose=standby.tail,
    )
    cluster.apply_text(namespace, deployment_yaml("second"))
    wait_for(
        "the new leader to reconcile",
        lambda: status_of(cluster, namespace, "second").get("champion"),
        TIMEOUT,
        diagnose=standby.tail,
    )


def test_only_the_lease_holder_acts(cluster: Cluster, namespace: str, start_operator) -> None:
    first = start_operator()
    wait_for(
        "the lease", lambda: cluster.get("lease", namespace, "baton-operator"), TIMEOUT, diagnose=first.tail
    )
    second = start_operator()
    holder = cluster.get("lease", namespace, "baton-operator")["spec"]["holderIdentity"]
    cluster.apply_text(namespace, pool_yaml() + "---" + deployment_yaml())
    wait_for(
        "status",
        lambda: status_of(cluster, namespace, "medical").get("champion"),
        TIMEOUT,
        diagnose=first.tail,
    )
    assert cluster.get("lease", namespace, "baton-operator")["spec"]["holderIdentity"] == holder
    assert "holds lease" not in second.tail()

    first.kill()  # the standby takes over once the lease expires
    standby_takes_over(cluster, namespace, holder, second)


def test_a_status_write_decided_on_an_older_object_is_refused(cluster: Cluster, namespace: str) -> None:
    cluster.apply_text(namespace, deployment_yaml())
    read = cluster.get("modeldeployment", namespace, "medical")["metadata"]["resourceVersion"]
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(cluster.plane.kubeconfig)))
    written = kube.patch_status("modeldeployments", namespace, "medical", {"phase": "Pending"}, read)
    assert written["metadata"]["resourceVersion"] != read
    with pytest.raises(Conflict):  # decided on `read`, but the object has moved on since
        kube.patch_status("modeldeployments", namespace, "medical", {"phase": "Failed"}, read)
    assert status_of(cluster, namespace, "medical")["phase"] == "Pending"


def test_a_leader_frozen_past_its_lease_writes_nothing_and_exits(
    cluster: Cluster, namespace: str, start_operator
) -> None:
    """SIGSTOP the leader past its lease; the standby takes over, acts and dies, and its lease runs out
    too; then a change the frozen leader would act on; SIGCONT. The Lease is free to take, but a
    process that slept past its renew deadline must not take it back with what it saw before: it
    exits and writes nothing."""
    first = start_operator()
    wait_for(
        "the lease", lambda: cluster.get("lease", namespace, "baton-operator"), TIMEOUT, diagnose=first.tail
    )
    cluster.apply_text(namespace, pool_yaml() + "---" + deployment_yaml())
    wait_for(
        "status",
        lambda: status_of(cluster, namespace, "medical").get("champion"),
        TIMEOUT,
        diagnose=first.tail,
    )
    holder = cluster.get("lease", namespace, "baton-operator")["spec"]["holderIdentity"]
    second = start_operator()

    first.signal(signal.SIGSTOP)
    standby_takes_over(cluster, namespace, holder, second)
    second.kill()  # from here on, only the frozen leader could write
    lease = cluster.get("lease", namespace, "baton-operator")["spec"]
    time.sleep(lease["leaseDurationSeconds"] + 1)  # the dead standby's lease has expired
    cluster.kubectl(
        "patch", "modeldeployment", "medical", "--namespace", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"rollout": {"steps": [{"weight": 50, "pause": "2s", "minRequests": 0}]}}}),
    )  # fmt: skip
    before = cluster.get("modeldeployment", namespace, "medical")
    events_before = len(cluster.items("events", namespace))

    first.signal(signal.SIGCONT)
    assert first.wait(30) == LOST_LEADERSHIP_EXIT_CODE, first.tail()
    after = cluster.get("modeldeployment", namespace, "medical")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], first.tail()
    assert after["status"]["observedGeneration"] < after["metadata"]["generation"]
    assert len(cluster.items("events", namespace)) == events_before
    assert cluster.get("lease", namespace, "baton-operator")["spec"] == lease
    assert "exiting without writing" in first.tail()


def test_a_directory_source_creates_pinned_candidates(
    cluster: Cluster, namespace: str, start_operator, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    payload = b"GGUF" + b"\0" * 60
    (releases / "v3.Q4_K_M.gguf").write_bytes(payload)
    (releases / "notes.txt").write_text("not a release")
    operator = start_operator()
    cluster.apply_text(
        namespace,
        deployment_yaml() + "---" + directory_source_yaml(releases, "  candidateLabels: {team: medical}\n"),
    )
    candidate = wait_for(
        "a ModelCandidate for v3",
        lambda: cluster.get("modelcandidate", namespace, "medical-v3"),
        TIMEOUT,
        diagnose=operator.tail,
    )
    artifact = candidate["spec"]["artifact"]
    assert artifact["digest"] == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert (artifact["quantization"], artifact["uri"]) == ("Q4_K_M", f"file://{releases}/v3.Q4_K_M.gguf")
    assert candidate["metadata"]["labels"] == {"team": "medical", "baton.dev/source": "medical-drops"}
    assert candidate["metadata"]["ownerReferences"][0]["kind"] == "ModelSource"
    source = wait_for(
        "source status",
        lambda: (
            (cluster.get("modelsource", namespace, "medical-drops") or {})
            .get("status", {})
            .get("lastVersion")
        ),
        TIMEOUT,
    )
    assert source == "v3"
    assert len(cluster.items("modelcandidates", namespace)) == 1


def test_a_source_offers_its_quantizations_in_order(
    cluster: Cluster, namespace: str, start_operator, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    releases.mkdir()
    for quantization in ("Q8_0", "Q4_K_M", "TQ2_0"):
        (releases / f"v2.{quantization}.gguf").write_bytes(b"GGUF" + quantization.encode())
    operator = start_operator()
    cluster.apply_text(
        namespace,
        deployment_yaml() + "---" + directory_source_yaml(releases, "  quantizations: [TQ2_0, Q4_K_M]\n"),
    )

    def names() -> list[str]:
        return sorted(item["metadata"]["name"] for item in cluster.items("modelcandidates", namespace))

    wait_for("the cheapest first", lambda: names() == ["medical-v2-tq2-0"], TIMEOUT, diagnose=operator.tail)
    time.sleep(3)  # three more polls: the next waits for a decision
    assert names() == ["medical-v2-tq2-0"]
    # What the operator writes when a rollout rejects it (no pool runs here to reach that decision).
    rejected = {"status": {"phase": "Rejected", "message": "GainTooSmall: test"}}
    cluster.kubectl(
        "patch", "modelcandidate", "medical-v2-tq2-0", "--namespace", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(rejected),
    )  # fmt: skip
    wait_for(
        "the next quantization",
        lambda: names() == ["medical-v2-q4-k-m", "medical-v2-tq2-0"],
        TIMEOUT,
        diagnose=operator.tail,
    )
    offered = cluster.get("modelcandidate", namespace, "medical-v2-q4-k-m")
    assert (offered["spec"]["version"], offered["spec"]["artifact"]["quantization"]) == ("v2", "Q4_K_M")
    time.sleep(3)
    assert "medical-v2-q8-0" not in names()  # not in the source's list


def test_an_http_index_source_creates_candidates(cluster: Cluster, namespace: str, start_operator) -> None:
    digest = "sha256:" + "7" * 64
    index = [
        {
            "version": "v5",
            "uri": "http://mirror.example/medical-v5.gguf",
            "digest": digest,
            "quantization": "TQ2_0",
        }
    ]

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(index).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        operator = start_operator()
        cluster.apply_text(
            namespace,
            deployment_yaml()
            + f"""---
apiVersion: baton.dev/v1alpha1
kind: ModelSource
metadata: {{name: mirror}}
spec:
  deployment: medical
  http: {{indexUrl: "http://127.0.0.1:{server.server_port}/index.json"}}
  pollInterval: 1s
""",
        )
        candidate = wait_for(
            "a ModelCandidate for v5",
            lambda: cluster.get("modelcandidate", namespace, "medical-v5"),
            TIMEOUT,
            diagnose=operator.tail,
        )
        assert candidate["spec"]["artifact"] == {
            "uri": "http://mirror.example/medical-v5.gguf",
            "digest": digest,
            "quantization": "TQ2_0",
            "format": "gguf",
        }
    finally:
        server.shutdown()
