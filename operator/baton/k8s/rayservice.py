"""The KubeRay `RayService` of a ModelPool: rendering it, and reading back what the data plane reports.

Pure functions over API dicts. The operator writes `spec.serveConfigV2` (a YAML string, as
KubeRay expects) from `baton.rollout.render.render_pool`; KubeRay (in a cluster) or
`baton pool-runner` (tests, laptops) deploys it and writes `status.activeServiceStatus
.applicationStatuses`, from which the operator learns each revision's health. Traffic weights
change in place: only the ingress application's `user_config` differs between two configs.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import threading
from collections.abc import Mapping
from typing import Any

import yaml

from baton.api.common import API_VERSION
from baton.api.pool import ARTIFACT_CACHE_PATH, MODELS_PATH, ArtifactCache, ModelPoolSpec, ModelVolume
from baton.rollout.model import RevisionHealth, RevisionState
from baton.rollout.render import RenderedPool
from baton_serving.auth import ALL_DEPLOYMENTS, ApiKey, KeyRole
from baton_serving.config import (
    INGRESS_APP,
    INGRESS_DEPLOYMENT,
    SERVE_PROCESS_ENV,
    AuthConfig,
    engine_app_name,
    render_serve_config,
)

POOL_LABEL = "baton.dev/pool"
# What KubeRay (v1.5, `labelPod` in ray-operator/controllers/ray/common/pod.go) puts on every Ray pod
# it creates, beside the labels of the pod template; the pool's own label comes from that template.
KUBERAY_POD_LABELS = {"app.kubernetes.io/created-by": "kuberay-operator"}
# libyaml's safe dumper and loader when PyYAML has them (its wheels do): 5-7x faster than the pure
# Python ones on a 200-application serveConfigV2 (18 vs 81 ms to write, 23 vs 171 ms to read),
# and the operator's event loop waits for both.
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# KubeRay application statuses (ray.serve's ApplicationStatus).
_RUNNING = "RUNNING"
_FAILED = ("DEPLOY_FAILED", "UNHEALTHY")
# A revision whose engine application runs while the ingress does not yet call its model ready.
ENGINE_STARTING = "the engine application runs; the ingress does not report its model ready yet"
# The pool image's unprivileged user (images/pool.Containerfile).
RAY_UID = 1000
# Ports of a Ray pod that others than the pool's own pods reach: Serve's HTTP proxy (clients, the
# operator, Prometheus: baton's `/metrics`), Ray's metrics and the dashboard (KubeRay deploys
# `serveConfigV2` through it). GCS, raylets and object transfer are the pool's own business.
SERVE_PORT, RAY_METRICS_PORT, DASHBOARD_PORT = 8000, 8080, 8265
# The Ray container's named ports, by KubeRay's names (`ray-operator/controllers/ray/utils/constant.go`).
# KubeRay adds only `metrics` to a pod by itself, so without `serve` a PodMonitor selecting that port
# (the chart's) finds no target. Once the head declares any port, KubeRay builds the head Service from
# the declared ones alone: the head declares KubeRay's whole default set (workers join through
# `gcs-server`, KubeRay reaches the dashboard by `dashboard`), workers what runs on them.
_WORKER_PORTS = {"serve": SERVE_PORT, "metrics": RAY_METRICS_PORT}
_HEAD_PORTS = {"gcs-server": 6379, "dashboard": DASHBOARD_PORT, "client": 10001, **_WORKER_PORTS}
# The label KubeRay's Helm chart puts on its operator pods: only they may reach the dashboard.
KUBERAY_OPERATOR_LABELS = {"app.kubernetes.io/name": "kuberay-operator"}
# Where Ray writes at run time (sessions, sockets, spilled objects, logs; `~/.cache`): the root file
# system is read-only, so a Ray pod can change nothing of its image.
_WRITABLE = {"tmp": "/tmp", "home": "/home/ray"}
MODELS_VOLUME, CACHE_VOLUME, KEYS_VOLUME = "models", "artifact-cache", "api-keys"
# The id of the operator's key file in every pool's keys directory (reserved: a client key of this id
# would collide with it in the projected volume).
BENCHMARK_KEY_ID = "baton-operator"
# The operator's benchmarks and canary probes must not be throttled by a client-sized quota.
BENCHMARK_REQUESTS_PER_MINUTE, BENCHMARK_MAX_CONCURRENT = 60_000, 64


def ray_service(pool: dict[str, Any], rendered: RenderedPool, keys: bool) -> dict[str, Any]:
    """The RayService manifest for a pool, owned by the ModelPool (deleted with it).

    `keys`: the pool requires API keys, read from the pool's keys Secrets and the operator's own
    (`benchmark_secret`), mounted at the ingress's keys directory in every Ray pod (an ingress
    replica may run on any of them). Without, anyone who reaches the Serve port may call and pin.
    """
    metadata = pool["metadata"]
    spec = ModelPoolSpec.model_validate(pool.get("spec", {}))
    workers = spec.worker_resources
    resources = {"cpu": workers.cpu, "memory": workers.memory}
    if workers.gpus:
        resources["nvidia.com/gpu"] = str(workers.gpus)
    volumes = [{"name": name, "emptyDir": {}} for name in _WRITABLE]
    mounts = [{"name": name, "mountPath": path} for name, path in _WRITABLE.items()]
    volumes.append(_cache_volume(spec.artifact_cache))
    mounts.append({"name": CACHE_VOLUME, "mountPath": ARTIFACT_CACHE_PATH})
    if spec.model_volume is not None:
        volumes.append(_model_volume(spec.model_volume))
        mounts.append({"name": MODELS_VOLUME, "mountPath": MODELS_PATH, "readOnly": True})
    auth = AuthConfig(enabled=keys)
    if keys:
        secrets = [benchmark_secret_name(metadata["name"]), *spec.key_secrets]
        sources = [{"secret": {"name": secret}} for secret in secrets]
        volumes.append({"name": KEYS_VOLUME, "projected": {"sources": sources}})
        mounts.append({"name": KEYS_VOLUME, "mountPath": auth.keys_dir, "readOnly": True})
    config = rendered.config.model_copy(update={"auth": auth, "artifact_cache_dir": ARTIFACT_CACHE_PATH})

    def template(ports: Mapping[str, int]) -> dict[str, Any]:
        """A Ray pod template (a new one for each group: a caller may change one group's)."""
        container = {
            "name": "ray",
            "image": spec.ray_image,
            "ports": [{"name": name, "containerPort": port} for name, port in ports.items()],
            "resources": {"limits": dict(resources), "requests": dict(resources)},
            # KubeRay copies this onto the init container it adds to workers (`wait-gcs-ready`).
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
            },
            "volumeMounts": [dict(mount) for mount in mounts],
            # Serve's HTTP proxy and controller start from `ray start`, not from a replica's runtime env.
            "env": [{"name": name, "value": value} for name, value in SERVE_PROCESS_ENV.items()],
        }
        return {
            # KubeRay copies template labels onto the pods; its own ray.io/cluster carries a random
            # suffix, so the pool's label is what ties a pod to its pool (the operator watches pods
            # by it, the NetworkPolicy selects them by it).
            "metadata": {"labels": {POOL_LABEL: metadata["name"]}},
            "spec": {
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RAY_UID,
                    "runAsGroup": RAY_UID,
                    "fsGroup": RAY_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                # Ray pods call no Kubernetes API: no service-account token for a model's code to read.
                "automountServiceAccountToken": False,
                "containers": [container],
                "volumes": copy.deepcopy(volumes),
            },
        }

    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _owned(metadata, metadata["name"]),  # the pool's RayService has the pool's name
        "spec": {
            "serveConfigV2": serve_config_text(render_serve_config(config)),
            "rayClusterConfig": {
                "rayVersion": "2.60.0",
                # `ray start` in a fresh pod runs without token auth (Ray enables it by default only for a
                # local `ray.init()` or when a token file exists), and the dashboard and GCS run whatever
                # code they are sent. KubeRay (>= 1.5) then generates a token Secret per cluster, gives it
                # to the Ray containers and sends it to the dashboard itself; Serve's HTTP proxy, which
                # baton reads, does not ask for it.
                "authOptions": {"mode": "token"},
                # No `dashboard-host`: KubeRay's default (every address of the pod) is what lets it
                # reach the dashboard through the head's Service; the token above and the pool's
                # NetworkPolicy (`network_policy`) are what keep others out.
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": template(_HEAD_PORTS),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "models",
                        "replicas": spec.workers,
                        "minReplicas": spec.workers,
                        "maxReplicas": spec.workers,
                        "rayStartParams": {},
                        "template": template(_WORKER_PORTS),
                    }
                ],
            },
        },
    }


def _model_volume(volume: ModelVolume) -> dict[str, Any]:
    """The pod volume of a model volume: its one source, read-only wherever the source can say so."""
    ((kind, source),) = volume.to_wire().items()
    if kind != "image":  # an image volume is read-only by nature and has no such field
        source = source | {"readOnly": True}
    return {"name": MODELS_VOLUME, kind: source}


def _cache_volume(cache: ArtifactCache) -> dict[str, Any]:
    if cache.persistent_volume_claim is not None:
        return {"name": CACHE_VOLUME, "persistentVolumeClaim": cache.persistent_volume_claim.to_wire()}
    return {"name": CACHE_VOLUME, "emptyDir": {"sizeLimit": cache.size_limit}}


def benchmark_key(secret: bytes, namespace: str, pool: str) -> str:
    """The operator's benchmark key for one pool, derived from its own secret (the chart's Secret).

    One key per pool: the key sits in a Secret of the pool's namespace, where that namespace's
    admins may read it, and it must not let them pin revisions of another namespace's pools.
    """
    return hmac.new(secret, f"{namespace}/{pool}".encode(), hashlib.sha256).hexdigest()


def benchmark_secret(pool: dict[str, Any], key: str) -> dict[str, Any]:
    """The Secret holding the operator's key file for one pool, owned by the ModelPool."""
    metadata = pool["metadata"]
    entry = ApiKey(
        key=key,
        deployments=[ALL_DEPLOYMENTS],
        role=KeyRole.BENCHMARK,
        requests_per_minute=BENCHMARK_REQUESTS_PER_MINUTE,
        max_concurrent=BENCHMARK_MAX_CONCURRENT,
    )
    content = base64.b64encode(entry.model_dump_json().encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _owned(metadata, benchmark_secret_name(metadata["name"])),
        "type": "Opaque",
        "data": {BENCHMARK_KEY_ID: content},
    }


def benchmark_secret_name(pool: str) -> str:
    return f"{pool}-baton-operator-key"


def _owned(pool: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The metadata of an object the ModelPool owns (deleted with it), in the pool's namespace."""
    return {
        "name": name,
        "namespace": pool.get("namespace", "default"),
        "labels": {POOL_LABEL: pool["name"], "app.kubernetes.io/managed-by": "baton"},
        "ownerReferences": [_owner(pool)],
    }


def network_policy(pool: dict[str, Any]) -> dict[str, Any]:
    """The NetworkPolicy fencing a pool's Ray pods, owned by the ModelPool like its RayService.

    Ray's GCS and dashboard run whatever code they are sent; token auth guards them, and this keeps
    every pod but the pool's own and KubeRay's from reaching them at all (where the network plugin
    enforces NetworkPolicies). Serve's HTTP port and Ray's metrics stay open to the cluster.
    """
    metadata = pool["metadata"]
    own = {"podSelector": {"matchLabels": {POOL_LABEL: metadata["name"]}}}
    kuberay = {"namespaceSelector": {}, "podSelector": {"matchLabels": KUBERAY_OPERATOR_LABELS}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _owned(metadata, network_policy_name(metadata["name"])),
        "spec": {
            "podSelector": own["podSelector"],
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [own]},
                {"from": [kuberay], "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]},
                {"ports": [{"protocol": "TCP", "port": port} for port in (SERVE_PORT, RAY_METRICS_PORT)]},
            ],
        },
    }


def network_policy_name(pool: str) -> str:
    return f"{pool}-ray"


def _owner(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelPool",
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def serve_config(ray_service_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parsed `serveConfigV2` (shared between callers: read it, never change it)."""
    if not ray_service_body:
        return {"applications": []}
    return _parse_serve_config(ray_service_body.get("spec", {}).get("serveConfigV2") or "")


def serve_config_text(config: dict[str, Any]) -> str:
    """The `serveConfigV2` YAML of a rendered config, remembered both ways.

    A pool is rendered again on every change of any of its deployments, mostly to the same config,
    and each RayService event brings a text back: libyaml still takes ~20 ms per 200 applications
    each way, on the operator's event loop. A text the operator wrote is never parsed.
    """
    key = json.dumps(config, sort_keys=True)
    text = _TEXT_BY_CONFIG.get(key)
    if text is None:
        text = yaml.dump(config, Dumper=_Dumper, sort_keys=True)
        _remember(_TEXT_BY_CONFIG, key, text)
        _remember(_CONFIG_BY_TEXT, text, config)
    return text


def _parse_serve_config(text: str) -> dict[str, Any]:
    # Every deployment of a pool reads the same text: parsed once, not once per reconcile (a
    # 100-deployment pool's YAML took ~10 ms to parse, times 1,000 reconciles per pass).
    config = _CONFIG_BY_TEXT.get(text)
    if config is None:
        config = yaml.load(text, Loader=_Loader) or {"applications": []}
        _remember(_CONFIG_BY_TEXT, text, config)
    return config


_CACHED_CONFIGS = 64
_TEXT_BY_CONFIG: dict[str, str] = {}  # canonical JSON of a config -> its YAML
_CONFIG_BY_TEXT: dict[str, dict[str, Any]] = {}  # YAML -> its config (shared: never changed)
_CACHE_LOCK = threading.Lock()  # the pool runner and the scale bench read from several threads


def _remember(cache: dict[str, Any], key: str, value: Any) -> None:
    with _CACHE_LOCK:
        cache[key] = value
        while len(cache) > _CACHED_CONFIGS:
            del cache[next(iter(cache))]  # the oldest entry


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
    return health, _served_routes(config, ray_service_body).get(deployment, {})


def _engine_health(revision: str, engines: Mapping[str, Mapping[str, Any]] | None) -> RevisionHealth:
    if engines is None:
        return RevisionHealth(RevisionState.READY)
    engine = engines.get(revision)
    if engine is None or not engine.get("ready"):
        error = (engine or {}).get("error")
        return (
            RevisionHealth(RevisionState.FAILED, str(error)[:500])
            if error
            else RevisionHealth(RevisionState.LOADING, ENGINE_STARTING)
        )
    return RevisionHealth(RevisionState.READY)


def deployment_views(
    ray_service_body: Mapping[str, Any] | None, previous: Mapping[str, tuple[Any, ...]] | None = None
) -> dict[str, tuple[Any, ...]]:
    """Per deployment, what its reconcile reads of a RayService: engine statuses and served weights.

    A RayService event changes nothing for a deployment whose view is the same before and after
    it, so only the others need a reconcile: in a pool of 100 deployments each canary step would
    otherwise reconcile all 100, twice. Between a spec write and the runner reporting it, served
    weights are unknown for everyone; the view keeps the weights last served (from `previous`),
    so only the deployment whose route changed is woken, once the new weights are served.
    """
    config = serve_config(ray_service_body)
    statuses = _application_statuses(ray_service_body)
    engines: dict[str, list[tuple[Any, ...]]] = {}
    for application in config.get("applications", []):
        name = application["name"]
        if name == INGRESS_APP:
            continue
        deployment, _, revision = name.partition(".")
        reported = statuses.get(name, {})
        engines.setdefault(deployment, []).append((revision, reported.get("status"), reported.get("message")))
    if _generation_observed(ray_service_body):
        served = {
            deployment: tuple(sorted(weights.items()))
            for deployment, weights in _served_routes(config, ray_service_body).items()
        }
    else:
        served = {deployment: view[1] for deployment, view in (previous or {}).items()}
    return {
        deployment: (tuple(engines.get(deployment, ())), served.get(deployment, ()))
        for deployment in engines.keys() | served.keys()
    }


def _application_statuses(ray_service_body: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if not ray_service_body:
        return {}
    status = ray_service_body.get("status") or {}
    return (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}


def _served_routes(
    config: Mapping[str, Any], ray_service_body: Mapping[str, Any] | None
) -> dict[str, dict[str, int]]:
    """Deployment -> the weights its route was given, once the runner reports the current generation."""
    if not _generation_observed(ray_service_body):
        return {}
    for application in config.get("applications", []):
        if application["name"] != INGRESS_APP:
            continue
        for serve_deployment in application.get("deployments", []):
            if serve_deployment.get("name") != INGRESS_DEPLOYMENT:
                continue
            return {
                route["name"]: {name: round(weight) for name, weight in route["route"]["weights"].items()}
                for route in serve_deployment.get("user_config", {}).get("deployments", [])
            }
    return {}


def _generation_observed(ray_service_body: Mapping[str, Any] | None) -> bool:
    """Whether the runner (KubeRay, `baton pool-runner`) reports on the RayService's current spec."""
    if not ray_service_body:
        return False
    generation = ray_service_body.get("metadata", {}).get("generation")
    observed = (ray_service_body.get("status") or {}).get("observedGeneration")
    return generation is not None and observed == generation
