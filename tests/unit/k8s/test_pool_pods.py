"""A pool's Ray pods in its conditions (`baton.k8s.pools.pods_health`), from real pod status shapes.

The shapes are what the kubelet and the scheduler write (as `kubectl get pod -o yaml` shows them and
the Kubernetes API reference describes PodStatus / ContainerStatus / ContainerStateWaiting).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from baton.api import ModelPool
from baton.api.common import ConditionStatus
from baton.k8s.pools import Pools, pod_failure, pods_health
from baton.rollout.render import render_pool
from baton_serving.config import FetchPolicy

pytestmark = pytest.mark.unit

HEAD = "cpu-raycluster-x7k2p-head-9tq4d"
WORKER = "cpu-raycluster-x7k2p-models-worker-5lfzq"


def pod(name: str, status_yaml: str, **metadata: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "labels": {"baton.dev/pool": "cpu"}, **metadata},
        "status": yaml.safe_load(status_yaml),
    }


IMAGE_PULL_BACKOFF = """
phase: Pending
conditions:
- {type: PodReadyToStartContainers, status: "True", lastTransitionTime: "2026-12-02T10:00:01Z"}
- {type: Initialized, status: "True", lastTransitionTime: "2026-12-02T10:00:00Z"}
- type: Ready
  status: "False"
  reason: ContainersNotReady
  message: "containers with unready status: [ray]"
- type: ContainersReady
  status: "False"
  reason: ContainersNotReady
  message: "containers with unready status: [ray]"
- {type: PodScheduled, status: "True", lastTransitionTime: "2026-12-02T10:00:00Z"}
hostIP: 10.99.0.1
podIP: 10.244.0.12
startTime: "2026-12-02T10:00:00Z"
qosClass: Guaranteed
containerStatuses:
- name: ray
  image: docker.io/baton/pool:nope
  imageID: ""
  ready: false
  restartCount: 0
  started: false
  state:
    waiting:
      reason: ImagePullBackOff
      message: Back-off pulling image "docker.io/baton/pool:nope"
"""

ERR_IMAGE_PULL = IMAGE_PULL_BACKOFF.replace(
    """      reason: ImagePullBackOff
      message: Back-off pulling image "docker.io/baton/pool:nope\"""",
    """      reason: ErrImagePull
      message: 'failed to pull and unpack image "docker.io/baton/pool:nope": failed to resolve reference
        "docker.io/baton/pool:nope": failed to do request: Head "https://registry-1.docker.io/v2/baton/pool/manifests/nope":
        dial tcp: lookup registry-1.docker.io: no such host'""",
)

CRASH_LOOP = """
phase: Running
conditions:
- {type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [ray]"}
- {type: PodScheduled, status: "True"}
containerStatuses:
- name: ray
  image: docker.io/baton/pool:0.1.0
  imageID: docker.io/baton/pool@sha256:0f3c
  containerID: containerd://5e1d
  ready: false
  restartCount: 4
  started: false
  lastState:
    terminated:
      containerID: containerd://5e1d
      exitCode: 1
      reason: Error
      message: "Traceback (most recent call last): FileNotFoundError: /models/secret-prompt.gguf"
      startedAt: "2026-12-02T10:01:10Z"
      finishedAt: "2026-12-02T10:01:12Z"
  state:
    waiting:
      reason: CrashLoopBackOff
      message: back-off 1m20s restarting failed container=ray pod=cpu-raycluster-x7k2p-head-9tq4d_ml(8d1f)
"""

UNSCHEDULABLE = """
phase: Pending
qosClass: Guaranteed
conditions:
- type: PodScheduled
  status: "False"
  reason: Unschedulable
  lastProbeTime: null
  lastTransitionTime: "2026-12-02T10:00:00Z"
  message: "0/1 nodes are available: 1 Insufficient memory. preemption: 0/1 nodes are available:
    1 No preemption victims found for incoming pod."
"""

EVICTED = """
phase: Failed
reason: Evicted
message: "The node was low on resource: memory. Threshold quantity: 100Mi, available: 56Mi."
startTime: "2026-12-02T10:00:00Z"
"""

CREATING = """
phase: Pending
conditions:
- {type: Ready, status: "False", reason: ContainersNotReady, message: "containers with unready status: [ray]"}
- {type: PodScheduled, status: "True"}
containerStatuses:
- name: ray
  image: docker.io/baton/pool:0.1.0
  imageID: ""
  ready: false
  restartCount: 0
  started: false
  state:
    waiting: {reason: ContainerCreating}
"""

RUNNING = """
phase: Running
conditions:
- {type: Initialized, status: "True"}
- {type: Ready, status: "True"}
- {type: ContainersReady, status: "True"}
- {type: PodScheduled, status: "True"}
containerStatuses:
- name: ray
  image: docker.io/baton/pool:0.1.0
  imageID: docker.io/baton/pool@sha256:0f3c
  ready: true
  restartCount: 0
  started: true
  state:
    running: {startedAt: "2026-12-02T10:00:05Z"}
"""

INIT_FAILED = """
phase: Pending
conditions:
- {type: Initialized, status: "False", reason: ContainersNotInitialized}
- {type: PodScheduled, status: "True"}
initContainerStatuses:
- name: wait-gcs-ready
  image: docker.io/baton/pool:0.1.0
  ready: false
  restartCount: 0
  state:
    terminated: {exitCode: 2, reason: Error, message: "a log line"}
containerStatuses:
- name: ray
  ready: false
  restartCount: 0
  state:
    waiting: {reason: PodInitializing}
"""


@pytest.mark.parametrize(
    ("status", "reason", "says"),
    [
        (
            IMAGE_PULL_BACKOFF,
            "ImagePullBackOff",
            'container ray: Back-off pulling image "docker.io/baton/pool:nope"',
        ),
        (ERR_IMAGE_PULL, "ErrImagePull", "container ray: failed to pull and unpack image"),
        (CRASH_LOOP, "CrashLoopBackOff", "restarting failed container=ray pod="),
        (UNSCHEDULABLE, "Unschedulable", "is not scheduled: 0/1 nodes are available: 1 Insufficient memory."),
        (EVICTED, "Evicted", "failed: The node was low on resource: memory."),
        (INIT_FAILED, "Error", "container wait-gcs-ready exited with code 2"),
    ],
    ids=[
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "Unschedulable",
        "Evicted",
        "init-container",
    ],
)
def test_a_pod_that_cannot_start_names_the_kubelets_reason(status: str, reason: str, says: str) -> None:
    failure = pod_failure(pod(HEAD, status))
    assert failure is not None
    assert failure[0] == reason
    assert failure[1].startswith(f"pod {HEAD}") and says in failure[1]


def test_a_crash_loop_says_how_the_container_last_exited_but_never_its_log() -> None:
    _, message = pod_failure(pod(HEAD, CRASH_LOOP))
    assert message.endswith("(last exit: Error, code 1)")
    assert "Traceback" not in message and "secret-prompt" not in message
    _, init_message = pod_failure(pod(HEAD, INIT_FAILED))
    assert "a log line" not in init_message


@pytest.mark.parametrize("status", [CREATING, RUNNING], ids=["starting", "running"])
def test_a_starting_or_running_pod_is_no_failure(status: str) -> None:
    assert pod_failure(pod(HEAD, status)) is None


def test_an_unknown_waiting_reason_counts_as_a_failure() -> None:
    odd = CREATING.replace("{reason: ContainerCreating}", "{reason: SomethingNew, message: hm}")
    assert pod_failure(pod(HEAD, odd)) == ("SomethingNew", f"pod {HEAD} container ray: hm")


def test_pods_ready_is_true_only_when_every_pod_is() -> None:
    both = pods_health([pod(HEAD, RUNNING), pod(WORKER, RUNNING)])
    assert (both.status, both.reason, both.message) == (
        ConditionStatus.TRUE,
        "AllPodsReady",
        "2 of 2 pods ready",
    )
    starting = pods_health([pod(HEAD, RUNNING), pod(WORKER, CREATING)])
    assert (starting.status, starting.reason) == (ConditionStatus.FALSE, "PodsStarting")
    assert starting.message == f"1 of 2 pods ready; starting: {WORKER}" and not starting.failing
    none = pods_health([])
    assert none.status == ConditionStatus.UNKNOWN and not none.failing


def test_a_failing_pod_wins_over_starting_ones_and_deleted_pods_do_not_count() -> None:
    health = pods_health(
        [
            pod(WORKER, CREATING),
            pod(HEAD, IMAGE_PULL_BACKOFF),
            pod("cpu-raycluster-old-head-1", EVICTED, deletionTimestamp="2026-12-02T09:59:00Z"),
        ]
    )
    assert health.failing and health.reason == "ImagePullBackOff"
    assert health.message == f'pod {HEAD} container ray: Back-off pulling image "docker.io/baton/pool:nope"'


def test_many_failing_pods_are_counted_not_all_listed() -> None:
    pods = [pod(f"cpu-raycluster-x7k2p-models-worker-{i}", UNSCHEDULABLE) for i in range(5)]
    health = pods_health(pods)
    assert health.message.count("is not scheduled") == 3 and health.message.endswith(
        "; 2 more pods cannot start"
    )


def test_a_pod_that_cannot_start_keeps_the_pool_from_ready_even_with_a_running_ray_service() -> None:
    body = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": "cpu", "namespace": "ml", "uid": "u", "generation": 2},
        "spec": {},
    }
    rendered = render_pool(ModelPool.model_validate(body), [])
    pools = Pools(None, {}, lambda: datetime(2026, 12, 2, tzinfo=UTC), lambda *_: None, FetchPolicy(), None)  # type: ignore[arg-type]
    running = {"status": {"serviceStatus": "Running"}}

    def conditions(pods: list[dict]) -> dict[str, dict]:
        status = pools.status(body, rendered, 0, running, pods_health(pods))
        return {condition["type"]: condition for condition in status["conditions"]}

    failing = conditions([pod(HEAD, ERR_IMAGE_PULL)])
    assert failing["Ready"]["status"] == "False" and failing["Ready"]["reason"] == "ErrImagePull"
    assert (
        failing["PodsReady"]["status"] == "False"
        and f"pod {HEAD} container ray" in failing["Ready"]["message"]
    )
    assert failing["PodsReady"]["observedGeneration"] == 2
    healthy = conditions([pod(HEAD, RUNNING)])
    assert (healthy["Ready"]["status"], healthy["Ready"]["reason"]) == ("True", "RayServiceRunning")
    # Without pods to see (a stand-in runner, or before KubeRay made any), the RayService decides alone.
    unseen = conditions([])
    assert unseen["Ready"]["status"] == "True" and unseen["PodsReady"]["status"] == "Unknown"
