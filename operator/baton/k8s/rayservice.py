"""The KubeRay `RayService` of a ModelPool: rendering it, and reading back what the data plane reports.

Pure functions over API dicts. The operator writes `spec.serveConfigV2` (a YAML string, as
KubeRay expects) from `baton.rollout.render.render_pool`; KubeRay (in a cluster) or
`baton pool-runner` (tests, laptops) deploys it and writes `status.activeServiceStatus
.applicationStatuses`, from which the operator learns each revision's health. Traffic weights
change in place: only the ingress application's `user_config` differs between two configs.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import yaml

from baton.api.common import API_VERSION
from baton.rollout.model import RevisionHealth, RevisionState
from baton.rollout.render import RenderedPool
from baton_serving.config import INGRESS_APP, INGRESS_DEPLOYMENT, engine_app_name, render_serve_config

POOL_LABEL = "baton.dev/pool"
# KubeRay application statuses (ray.serve's ApplicationStatus).
_RUNNING = "RUNNING"
_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")


def ray_service_name(pool: str) -> str:
    return pool


def ray_service(pool: dict[str, Any], rendered: RenderedPool) -> dict[str, Any]:
    """The RayService manifest for a pool, owned by the ModelPool (deleted with it)."""
    metadata = pool["metadata"]
    spec = pool.get("spec", {})
    workers = spec.get("workerResources", {})
    image = spec.get("rayImage", "rayproject/ray:2.60.0-py311-cpu")
    resources = {"cpu": workers.get("cpu", "2"), "memory": workers.get("memory", "8Gi")}
    if workers.get("gpus"):
        resources["nvidia.com/gpu"] = str(workers["gpus"])
    container = {"name": "ray", "image": image, "resources": {"limits": resources, "requests": resources}}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": ray_service_name(metadata["name"]),
            "namespace": metadata.get("namespace", "default"),
            "labels": {POOL_LABEL: metadata["name"], "app.kubernetes.io/managed-by": "baton"},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "ModelPool",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(render_serve_config(rendered.config), sort_keys=True),
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": {"spec": {"containers": [container]}},
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "models",
                        "replicas": spec.get("workers", 1),
                        "minReplicas": spec.get("workers", 1),
                        "maxReplicas": spec.get("workers", 1),
                        "rayStartParams": {},
                        "template": {"spec": {"containers": [container]}},
                    }
                ],
            },
        },
    }


def serve_config(ray_service_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parsed `serveConfigV2` (shared between callers: read it, never change it)."""
    if not ray_service_body:
        return {"applications": []}
    return _parse_serve_config(ray_service_body.get("spec", {}).get("serveConfigV2") or "")


@functools.lru_cache(maxsize=64)
def _parse_serve_config(text: str) -> dict[str, Any]:
    # Every deployment of a pool reads the same text: parsed once, not once per reconcile (a
    # 100-deployment pool's YAML took ~10 ms to parse, times 1,000 reconciles per pass).
    return yaml.safe_load(text) or {"applications": []}


def observe_revisions(
    deployment: str,
    ray_service_body: Mapping[str, Any] | None,
    unschedulable: tuple[str, ...] = (),
    engines: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, RevisionHealth], dict[str, int]]:
    """Health of the deployment's revisions and the weights its route was given, from the RayService.

    A revision counts as told-to-run when its engine application is in `serveConfigV2`. Serve
    calls an engine RUNNING even when it refused its artifact (the replica stays up, never
    serving), so `engines` — the ingress's `/v1/baton/revisions` for this deployment, when
    reachable — has the last word on a RUNNING revision. Weights count as served only once the
    runner (KubeRay or `baton pool-runner`) reports the RayService's current generation; before
    that the served split is unknown (empty).
    """
    config = serve_config(ray_service_body)
    statuses = _application_statuses(ray_service_body)
    health: dict[str, RevisionHealth] = {}
    prefix = engine_app_name(deployment, "")
    for application in config.get("applications", []):
        name = application["name"]
        if not name.startswith(prefix):
            continue
        revision = name[len(prefix) :]
        reported = statuses.get(name, {})
        state = reported.get("status")
        if state == _RUNNING:
            health[revision] = _engine_health(revision, engines)
        elif state in _FAILED:
            health[revision] = RevisionHealth(RevisionState.FAILED, str(reported.get("message", ""))[:500])
        else:
            health[revision] = RevisionHealth(RevisionState.LOADING)
    for revision in unschedulable:
        if revision.startswith(f"{deployment}-"):
            health[revision] = RevisionHealth(RevisionState.UNSCHEDULABLE, "the pool's memory is full")
    return health, _served_weights(deployment, config, ray_service_body)


def _engine_health(revision: str, engines: Mapping[str, Mapping[str, Any]] | None) -> RevisionHealth:
    if engines is None:
        return RevisionHealth(RevisionState.READY)
    engine = engines.get(revision)
    if engine is None or not engine.get("ready"):
        error = (engine or {}).get("error")
        return (
            RevisionHealth(RevisionState.FAILED, str(error)[:500])
            if error
            else RevisionHealth(RevisionState.LOADING)
        )
    return RevisionHealth(RevisionState.READY)


def _application_statuses(ray_service_body: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not ray_service_body:
        return {}
    status = ray_service_body.get("status") or {}
    return (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}


def _served_weights(
    deployment: str, config: Mapping[str, Any], ray_service_body: Mapping[str, Any] | None
) -> dict[str, int]:
    if not ray_service_body:
        return {}
    generation = ray_service_body.get("metadata", {}).get("generation")
    observed = (ray_service_body.get("status") or {}).get("observedGeneration")
    if generation is None or observed != generation:
        return {}
    for application in config.get("applications", []):
        if application["name"] != INGRESS_APP:
            continue
        for serve_deployment in application.get("deployments", []):
            if serve_deployment.get("name") != INGRESS_DEPLOYMENT:
                continue
            for route in serve_deployment.get("user_config", {}).get("deployments", []):
                if route["name"] == deployment:
                    return {name: round(weight) for name, weight in route["route"]["weights"].items()}
    return {}
