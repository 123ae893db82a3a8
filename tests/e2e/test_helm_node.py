"""`helm install` of the chart as shipped, on the test bed's node, with the operator image images/build made.

The operator runs in a pod under the chart's ServiceAccount (its projected token, the chart's RBAC:
a missing verb leaves the status below unwritten), becomes Ready through the chart's probes, holds
the chart's Lease, and reconciles a ModelDeployment: it renders the pool's RayService (with the
pool image as its default rayImage) and writes the deployment's status. Two replicas elect one
leader. The probes are the operator's `/livez` and `/readyz` (the control loop's heartbeat). A
pool's pod that cannot start (labelled as KubeRay labels a head pod, with an image no registry
has) turns the ModelPool's conditions to the kubelet's reason. `helm uninstall` leaves no object of
the release behind.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import yaml

from baton.api.pool import DEFAULT_RAY_IMAGE
from baton.k8s.health import LIVEZ, READYZ
from tests.testbed.chart import (
    INSTANCE,
    LEASE,
    RELEASE,
    RELEASE_NAMESPACE,
    TIMEOUT_S,
    diagnose,
    helm,
    install,
    lease_holder,
    operator_pods,
    ready,
)
from tests.testbed.node import Node
from tests.testbed.processes import stall_main_thread, wait_for
from tests.testbed.workloads import artifact, deployment_document

pytestmark = pytest.mark.e2e

RELEASE_KINDS = "deployments,replicasets,pods,serviceaccounts,services,configmaps,roles,rolebindings,leases"


def test_helm_installed_operator_reconciles_under_its_service_account(
    node: Node, chart_release, smoke_gguf
) -> None:
    report = diagnose(node)
    install(node)
    (pod,) = operator_pods(node)
    assert ready(pod), report()
    spec = pod["spec"]
    assert spec["serviceAccountName"] == RELEASE  # the chart's, whose token is the pod's only credential
    assert spec["securityContext"]["runAsUser"] == 65532
    (container,) = spec["containers"]
    assert (
        container["livenessProbe"]["httpGet"]["path"],
        container["readinessProbe"]["httpGet"]["path"],
    ) == (
        LIVEZ,
        READYZ,
    )
    lease = wait_for(
        lambda: lease_holder(node),
        "nobody holds the chart's Lease",
        report,
        TIMEOUT_S,
    )
    assert lease == pod["metadata"]["name"]

    namespace = f"models-{uuid.uuid4().hex[:6]}"
    assert node.plane.kubectl("create", "namespace", namespace).returncode == 0
    documents = [
        {"apiVersion": "baton.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": "cpu"}, "spec": {}},
        deployment_document(artifact(f"file://{smoke_gguf.path}", smoke_gguf), min_samples=20),
    ]
    applied = node.plane.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(documents))
    assert applied.returncode == 0, applied.stderr
    rayservice = wait_for(
        lambda: node.plane.get("rayservice", "cpu", "-n", namespace), "no RayService", report, TIMEOUT_S
    )
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == DEFAULT_RAY_IMAGE

    def status() -> dict[str, Any]:
        deployment = node.plane.get("modeldeployment", "medical", "-n", namespace)
        observed = deployment.get("status", {})
        return observed if observed.get("phase") else {}

    written = wait_for(status, "the operator wrote no ModelDeployment status", report, TIMEOUT_S)
    # Nothing serves this RayService (no KubeRay, or, after the `kuberay` fixture started, Ray pods of
    # the pool's default size, which the two-core node cannot schedule): the champion waits for its pool.
    assert written["phase"] == "Pending", written

    # KubeRay's head pod for the pool, as KubeRay v1.5 labels it (labelPod in
    # ray-operator/controllers/ray/common/pod.go, plus the template's labels), with an image that no
    # registry has: the kubelet's reason must reach the pool's conditions, and the pool is not Ready.
    template = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    cluster = "cpu-x7k2p"  # KubeRay names a RayService's cluster <name>-<5 random characters>
    head_pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{cluster}-head-9tq4d",
            "labels": {
                **template["metadata"]["labels"],
                "ray.io/is-ray-node": "yes",
                "ray.io/cluster": cluster,
                "ray.io/node-type": "head",
                "ray.io/group": "headgroup",
                "ray.io/identifier": f"{cluster}-head",
                "app.kubernetes.io/name": "kuberay",
                "app.kubernetes.io/created-by": "kuberay-operator",
            },
        },
        "spec": {"containers": [{"name": "ray", "image": "docker.io/baton/pool:no-such-tag"}]},
    }
    # The namespace's default ServiceAccount, which admission requires, appears a moment after it.
    wait_for(
        lambda: (
            node.plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(head_pod)).returncode
            == 0
        ),
        "the head pod was not admitted",
        report,
        timeout=60,
    )
    started = time.monotonic()

    def pool_conditions() -> dict[str, dict[str, Any]]:
        conditions = (
            node.plane.get("modelpool", "cpu", "-n", namespace).get("status", {}).get("conditions", [])
        )
        by_type = {condition["type"]: condition for condition in conditions}
        pods = by_type.get("PodsReady", {})
        return by_type if pods.get("reason") in ("ErrImagePull", "ImagePullBackOff") else {}

    conditions = wait_for(
        pool_conditions, "the pool's conditions never named the image pull", report, timeout=90
    )
    print(f"image pull failure in the pool's conditions after {time.monotonic() - started:.1f} s")
    assert head_pod["metadata"]["name"] in conditions["PodsReady"]["message"]
    assert "container ray" in conditions["PodsReady"]["message"]
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] in ("ErrImagePull", "ImagePullBackOff")

    # The ModelPool's finalizer is the operator's: remove the pool while the operator still runs.
    deleted = node.plane.kubectl("delete", "namespace", namespace, "--timeout=120s")
    assert deleted.returncode == 0, deleted.stderr + report()


def test_two_replicas_elect_one_leader(node: Node, chart_release) -> None:
    report = diagnose(node)
    install(node, "--set=replicaCount=2")
    pods = operator_pods(node)
    assert len(pods) == 2 and all(ready(pod) for pod in pods), report()
    holder = wait_for(
        lambda: lease_holder(node),
        "nobody holds the Lease",
        report,
        TIMEOUT_S,
    )
    names = {pod["metadata"]["name"] for pod in pods}
    assert holder in names
    (standby,) = names - {holder}
    logs = {name: node.plane.kubectl("logs", "-n", RELEASE_NAMESPACE, name).stdout for name in names}
    assert f"{holder} holds lease" in logs[holder]
    assert "holds lease" not in logs[standby]

    # The leader dies: a live replica (the standby, or the pod replacing the leader) takes over once
    # the lease expires.
    node.plane.kubectl("delete", "pod", holder, "-n", RELEASE_NAMESPACE, "--grace-period=0", "--force")

    def new_holder() -> str | None:
        current = lease_holder(node)
        alive = {pod["metadata"]["name"] for pod in operator_pods(node)}
        return current if current not in (None, holder) and current in alive else None

    wait_for(new_holder, "no live replica took the Lease over", report, timeout=90)


def test_a_hung_control_loop_turns_the_operator_pod_unready(node: Node, chart_release) -> None:
    """The kubelet's own readiness probe, as the chart ships it, on a loop stalled from outside.

    The loop's thread blocks in a sleep (`stall_main_thread`, gdb on the container's process) while
    the probe thread runs on: the pod turns unready with the probe's reason, and Ready again once the
    loop runs, without a restart (the stall is shorter than the liveness probe's minute).
    """
    report = diagnose(node)
    install(node)
    (pod,) = operator_pods(node)
    name = pod["metadata"]["name"]
    wait_for(
        lambda: lease_holder(node) == name,
        "the pod does not lead",
        report,
        TIMEOUT_S,
    )
    (container,) = pod["status"]["containerStatuses"]
    stall_s = 35.0
    stalled_at = time.monotonic()
    stall = stall_main_thread(node.container_pid(container["containerID"]), stall_s)
    try:
        wait_for(
            lambda: not ready(node.plane.get("pod", name, "-n", RELEASE_NAMESPACE)),
            "the pod stayed Ready with its control loop stalled",
            report,
            timeout=stall_s,
        )
        unready_after = time.monotonic() - stalled_at
    finally:
        out, _ = stall.communicate(timeout=stall_s + 60)
    print(f"hung loop: pod unready after {unready_after:.1f} s")
    # 10 s without a beat, then two failed probes 5 s apart (the chart's readinessProbe).
    assert unready_after <= 10 + 1 + 2 * 5 + 5, (unready_after, out)
    recovered = wait_for(
        lambda: (p := node.plane.get("pod", name, "-n", RELEASE_NAMESPACE)) and ready(p) and p,
        "the pod did not turn Ready again once its loop ran",
        report,
        timeout=60,
    )
    assert recovered["status"]["containerStatuses"][0]["restartCount"] == 0, "liveness restarted it"


def test_uninstall_leaves_no_operator_objects(node: Node, chart_release) -> None:
    install(node)
    assert node.plane.get("lease", LEASE, "-n", RELEASE_NAMESPACE)
    helm(node, "uninstall", RELEASE, f"--namespace={RELEASE_NAMESPACE}", "--wait")

    def left() -> str:
        found = node.plane.kubectl(
            "get", RELEASE_KINDS, "-n", RELEASE_NAMESPACE, "-l", INSTANCE, "-o", "name"
        )
        assert found.returncode == 0, found.stderr
        return found.stdout

    # The operator's pods go through the garbage collector (ReplicaSet, then pods), after helm returns.
    wait_for(lambda: left() == "", "objects of the release are left", left, timeout=120)
    assert not node.plane.get("lease", LEASE, "-n", RELEASE_NAMESPACE)  # the operator's Lease went too
    cluster_wide = node.plane.kubectl("get", "clusterroles,clusterrolebindings", "-l", INSTANCE, "-o", "name")
    assert cluster_wide.returncode == 0 and cluster_wide.stdout == "", cluster_wide.stdout
