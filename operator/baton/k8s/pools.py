"""Pools on a cluster: a ModelPool and its deployments rendered into its RayService, and the pool's status.

The serve config is rendered by the core (`baton.rollout.render`); this module writes it into the
RayService the pool owns (only when its spec changed), remembers which revisions did not fit so
their deployments see them Unschedulable, and reports the pool's conditions. Those include the
pool's pods (`pods_health`, pure): KubeRay reports a RayService that cannot start as merely not
running yet, while the kubelet and the scheduler say why on the pods (ErrImagePull,
CrashLoopBackOff, Unschedulable), so a pod that cannot start shows in `PodsReady` and keeps the
pool from `Ready`, with the kubelet's reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from baton.api import ModelDeployment, ModelPool
from baton.api.common import Condition, ConditionStatus
from baton.k8s.kube import (
    NETWORK_GROUP,
    NETWORK_POLICIES,
    NETWORK_VERSION,
    RAY_GROUP,
    RAY_SERVICES,
    RAY_VERSION,
    Kube,
)
from baton.k8s.rayservice import (
    POOL_LABEL,
    benchmark_key,
    benchmark_secret,
    network_policy,
    ray_service,
)
from baton.k8s.store import Objects
from baton.rollout import format_time, merge_conditions
from baton.rollout.render import RenderedPool, render_pool
from baton_serving.config import FetchPolicy

PODS = "pods"  # the controller's view of the pools' Ray pods (watched by `baton.k8s.operator`)
PODS_STARTING = "PodsStarting"
# Container waiting reasons of a container on its way up; every other waiting reason (ErrImagePull,
# ImagePullBackOff, InvalidImageName, CrashLoopBackOff, CreateContainerConfigError, ...) means it
# cannot start without a change: failing closed, an unknown reason counts as a failure.
_STARTING = frozenset({"ContainerCreating", "PodInitializing"})
_MESSAGE_CHARS = 300
_NAMED_PODS = 3


@dataclass(frozen=True)
class PodsHealth:
    """The `PodsReady` condition of a pool; `failing` when a pod cannot start (not merely starting)."""

    status: ConditionStatus
    reason: str
    message: str

    @property
    def failing(self) -> bool:
        return self.status == ConditionStatus.FALSE and self.reason != PODS_STARTING


def _short(text: object) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= _MESSAGE_CHARS else text[: _MESSAGE_CHARS - 1] + "…"


def pod_failure(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of what keeps a pod from ever running, or None while it runs or starts.

    Read from what the scheduler and the kubelet write into `.status`; a terminated container's
    `message` is left out, because it may hold the container's log (FallbackToLogsOnError).
    """
    name = pod.get("metadata", {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("phase") == "Failed":
        return status.get("reason") or "PodFailed", _short(f"pod {name} failed: {status.get('message', '')}")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            return reason, _short(f"pod {name} is not scheduled: {condition.get('message', '')}")
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        state = container.get("state") or {}
        where = f"pod {name} container {container.get('name', '?')}"
        waiting, terminated = state.get("waiting"), state.get("terminated")
        if waiting and waiting.get("reason") not in _STARTING:
            last = (container.get("lastState") or {}).get("terminated")
            exited = f" (last exit: {last.get('reason')}, code {last.get('exitCode')})" if last else ""
            return waiting.get("reason") or "Waiting", _short(
                f"{where}: {waiting.get('message', '')}{exited}"
            )
        if terminated and terminated.get("exitCode", 0) != 0:
            code = terminated.get("exitCode")
            return terminated.get("reason") or "Error", _short(f"{where} exited with code {code}")
    return None


def _ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def pods_health(pods: Iterable[Mapping[str, Any]]) -> PodsHealth:
    """The pool's `PodsReady` condition from its Ray pods (those being deleted do not count)."""
    live = sorted(
        (pod for pod in pods if not pod.get("metadata", {}).get("deletionTimestamp")),
        key=lambda pod: pod.get("metadata", {}).get("name", ""),
    )
    if not live:
        return PodsHealth(ConditionStatus.UNKNOWN, "NoPods", "no Ray pod of the pool is known")
    failures = [failure for pod in live if (failure := pod_failure(pod)) is not None]
    if failures:
        reason = failures[0][0]
        named = "; ".join(message for _, message in failures[:_NAMED_PODS])
        more = (
            f"; {len(failures) - _NAMED_PODS} more pods cannot start" if len(failures) > _NAMED_PODS else ""
        )
        return PodsHealth(ConditionStatus.FALSE, reason, named + more)
    ready = sum(_ready(pod) for pod in live)
    if ready < len(live):
        waiting = ", ".join(pod["metadata"]["name"] for pod in live if not _ready(pod))
        return PodsHealth(
            ConditionStatus.FALSE, PODS_STARTING, f"{ready} of {len(live)} pods ready; starting: {waiting}"
        )
    return PodsHealth(ConditionStatus.TRUE, "AllPodsReady", f"{len(live)} of {len(live)} pods ready")


def deployment_or_none(document: dict[str, Any]) -> ModelDeployment | None:
    try:
        return ModelDeployment.model_validate(document)
    except ValidationError:
        return None


class Pools:
    """Renders pools; `unschedulable` is what the last render left out, per (namespace, pool)."""

    def __init__(
        self,
        kube: Kube,
        objects: Objects,
        clock: Callable[[], datetime],
        wake_deployment: Callable[[str, str], None],
        fetch: FetchPolicy,
        secret: bytes | None,
    ) -> None:
        self.kube = kube
        self.objects = objects
        self.clock = clock
        self.fetch = fetch
        self.secret = secret  # the operator's own: each pool's benchmark key derives from it
        self.keys_written: dict[tuple[str, str], str] = {}  # (namespace, pool) -> the pool's uid
        self.wake_deployment = wake_deployment
        self.unschedulable: dict[tuple[str, str], tuple[str, ...]] = {}

    async def render(self, namespace: str, name: str) -> bool:
        """Render one pool; False when there is nothing to render (gone or being deleted)."""
        body = self.objects["modelpools"].get((namespace, name))
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return False
        pool = ModelPool.model_validate(body)
        members = [
            deployment
            for (ns, _), document in list(self.objects["modeldeployments"].items())
            if ns == namespace
            and document.get("spec", {}).get("pool") == name
            and (deployment := deployment_or_none(document)) is not None
        ]
        rendered = render_pool(pool, members, self.fetch)
        if self.secret is not None and self.keys_written.get((namespace, name)) != body["metadata"]["uid"]:
            # Before the RayService whose pods mount it (a pod waits for a missing Secret). Written
            # once per pool and process: the operator cannot read Secrets back to compare (no `get`),
            # and a restarted operator with a rotated secret writes the new keys.
            key = benchmark_key(self.secret, namespace, name)
            await asyncio.to_thread(self.kube.apply_secret, benchmark_secret(body, key))
            self.keys_written[(namespace, name)] = body["metadata"]["uid"]
        manifest = ray_service(body, rendered, keys=self.secret is not None)
        current = self.objects["rayservices"].get((namespace, manifest["metadata"]["name"]))
        if current is None or current.get("spec") != manifest["spec"]:
            # The fence first: a Ray cluster never runs without it (apply_owned writes it only once).
            await asyncio.to_thread(
                self.kube.apply_owned, NETWORK_GROUP, NETWORK_VERSION, NETWORK_POLICIES, network_policy(body)
            )
            await asyncio.to_thread(self.kube.apply_owned, RAY_GROUP, RAY_VERSION, RAY_SERVICES, manifest)
        previous = self.unschedulable.get((namespace, name), ())
        self.unschedulable[(namespace, name)] = rendered.unschedulable
        for revision in set(previous) ^ set(rendered.unschedulable):
            for deployment in members:
                if revision.startswith(f"{deployment.metadata.name}-"):
                    self.wake_deployment(namespace, deployment.metadata.name)
        pods = [
            pod
            for (ns, _), pod in list(self.objects[PODS].items())
            if ns == namespace and pod.get("metadata", {}).get("labels", {}).get(POOL_LABEL) == name
        ]
        status = self.status(body, rendered, len(members), current, pods_health(pods))
        if status != body.get("status"):
            version = body["metadata"]["resourceVersion"]
            written = await asyncio.to_thread(
                self.kube.patch_status, "modelpools", namespace, name, status, version
            )
            self.objects["modelpools"][(namespace, name)] = written
        return True

    def status(
        self,
        body: dict[str, Any],
        rendered: RenderedPool,
        members: int,
        ray: dict[str, Any] | None,
        pods: PodsHealth,
    ) -> dict[str, Any]:
        generation = body["metadata"].get("generation")
        previous = [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions", [])]
        ray_status = (ray or {}).get("status") or {}
        running = ray_status.get("serviceStatus") == "Running"
        if pods.failing:
            ready = (ConditionStatus.FALSE, pods.reason, pods.message)
        else:
            ready = (
                ConditionStatus.TRUE if running else ConditionStatus.FALSE,
                "RayServiceRunning" if running else "RayServiceNotRunning",
                f"RayService serviceStatus={ray_status.get('serviceStatus', 'unknown')}",
            )
        wanted = [
            ("Ready", *ready),
            ("PodsReady", pods.status, pods.reason, pods.message),
            (
                "Unschedulable",
                ConditionStatus.TRUE if rendered.unschedulable else ConditionStatus.FALSE,
                "PoolMemoryFull" if rendered.unschedulable else "AllRevisionsFit",
                (
                    f"left out for lack of memory: {', '.join(rendered.unschedulable)} "
                    f"(requested {rendered.memory_requested_bytes} of {rendered.memory_capacity_bytes} bytes)"
                    if rendered.unschedulable
                    else ""
                ),
            ),
        ]
        conditions = merge_conditions(previous, wanted, generation, format_time(self.clock()))
        return {
            "observedGeneration": generation,
            "rayService": body["metadata"]["name"],
            "deployments": members,
            "memoryRequestedBytes": rendered.memory_requested_bytes,
            "memoryCapacityBytes": rendered.memory_capacity_bytes,
            "conditions": [condition.to_wire() for condition in conditions],
        }
