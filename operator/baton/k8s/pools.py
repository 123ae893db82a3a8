"""Pools on a cluster: a ModelPool and its deployments rendered into its RayService, and the pool's status.

The serve config is rendered by the core (`baton.rollout.render`); this module writes it into the
RayService the pool owns (only when its spec changed), remembers which revisions did not fit so
their deployments see them Unschedulable, and reports the pool's conditions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from baton.api import ModelDeployment, ModelPool
from baton.api.common import Condition, ConditionStatus
from baton.k8s.kube import RAY_GROUP, RAY_SERVICES, RAY_VERSION, Kube
from baton.k8s.rayservice import ray_service
from baton.k8s.store import Objects
from baton.rollout import format_time, merge_conditions
from baton.rollout.render import RenderedPool, render_pool


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
    ) -> None:
        self.kube = kube
        self.objects = objects
        self.clock = clock
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
        rendered = render_pool(pool, members)
        manifest = ray_service(body, rendered)
        current = self.objects["rayservices"].get((namespace, manifest["metadata"]["name"]))
        if current is None or current.get("spec") != manifest["spec"]:
            await asyncio.to_thread(self.kube.apply_owned, RAY_GROUP, RAY_VERSION, RAY_SERVICES, manifest)
        previous = self.unschedulable.get((namespace, name), ())
        self.unschedulable[(namespace, name)] = rendered.unschedulable
        for revision in set(previous) ^ set(rendered.unschedulable):
            for deployment in members:
                if revision.startswith(f"{deployment.metadata.name}-"):
                    self.wake_deployment(namespace, deployment.metadata.name)
        status = self.status(body, rendered, len(members), current)
        if status != body.get("status"):
            version = body["metadata"]["resourceVersion"]
            written = await asyncio.to_thread(
                self.kube.patch_status, "modelpools", namespace, name, status, version
            )
            self.objects["modelpools"][(namespace, name)] = written
        return True

    def status(
        self, body: dict[str, Any], rendered: RenderedPool, members: int, ray: dict[str, Any] | None
    ) -> dict[str, Any]:
        generation = body["metadata"].get("generation")
        previous = [Condition.model_validate(c) for c in (body.get("status") or {}).get("conditions", [])]
        ray_status = (ray or {}).get("status") or {}
        running = ray_status.get("serviceStatus") == "Running"
        wanted = [
            (
                "Ready",
                ConditionStatus.TRUE if running else ConditionStatus.FALSE,
                "RayServiceRunning" if running else "RayServiceNotRunning",
                f"RayService serviceStatus={ray_status.get('serviceStatus', 'unknown')}",
            ),
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
