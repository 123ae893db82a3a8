"""The operator's imperative shell: watch events in, `baton.rollout.reconcile` in the middle, API writes out.

Kopf delivers watch events for every kind (`baton.k8s.operator` wires the handlers); the
controller keeps the latest body of each object in memory (the view), turns events into work keys
(a deployment, or a pool) for the work queue (`baton.k8s.queue`), and reconciles a deployment key:
read the world (RayService or InferenceService status, the ingress's engine statuses, evidence
results), call the pure core, then emit Events, replace `.status` (only if it changed), write
candidate statuses, start evidence tasks (`baton.k8s.tasks`) and schedule a pool render
(`baton.k8s.pools`).

Nothing here is remembered across restarts except what is in the API server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY, Counter
from pydantic import ValidationError

from baton.api import ModelDeployment
from baton.api.deployment import Runtime
from baton.evidence.candidates import apply_candidate_update
from baton.k8s import inference_service
from baton.k8s.kube import (
    INFERENCE_SERVICES,
    KSERVE_GROUP,
    KSERVE_VERSION,
    RAY_GROUP,
    RAY_SERVICES,
    RAY_VERSION,
    Conflict,
    Kube,
)
from baton.k8s.pools import Pools
from baton.k8s.queue import Key, WorkQueue
from baton.k8s.rayservice import ENGINE_STARTING, deployment_views, observe_revisions
from baton.k8s.store import candidate_or_none, refresh
from baton.k8s.tasks import DEPLOYMENT, EvidenceTasks
from baton.observability.rollout_metrics import RolloutMetrics
from baton.rollout import (
    DeployRevision,
    EmitEvent,
    Observations,
    ObserveCanary,
    RemoveRevision,
    RunBenchmark,
    SetWeights,
    UpdateCandidateStatus,
    reconcile,
)
from baton_serving.config import FetchPolicy

log = logging.getLogger("baton.operator")
RECONCILES = Counter("baton_operator_reconciles", "Reconciles run, by kind of work key.", ["kind"])
# Phase, weight and decisions of every deployment, for the dashboards and the rollout alerts.
ROLLOUT = RolloutMetrics(REGISTRY)

POOL = "pool"
# A pool renders at most once per window: a burst of deployment changes becomes one RayService write.
POOL_RENDER_WINDOW_S = 0.1
ENGINE_CACHE_S = 1.0
# The RayServices are re-read this often, as level-triggered controllers resync: a watch event
# lost then costs seconds, never a rollout stuck for good.
RESYNC_S = 10.0


def _revision(metadata: Mapping[str, Any]) -> int | None:
    """resourceVersion is opaque to clients in general, but it is etcd's revision on every API
    server baton runs against."""
    try:
        return int(metadata["resourceVersion"])
    except (KeyError, ValueError):
        return None


def newer(listed: Mapping[str, Any], cached: Mapping[str, Any]) -> bool:
    """Whether a listed object is newer than the cached one (when unknown: whether it differs)."""
    listed_at, cached_at = _revision(listed), _revision(cached)
    if listed_at is None or cached_at is None:
        return listed.get("resourceVersion") != cached.get("resourceVersion")
    return listed_at > cached_at


def older(incoming: Mapping[str, Any], cached: Mapping[str, Any]) -> bool:
    """Whether a watched object is known to be older than the cached one."""
    incoming_at, cached_at = _revision(incoming), _revision(cached)
    return incoming_at is not None and cached_at is not None and incoming_at < cached_at


@dataclass(frozen=True)
class Settings:
    """How the operator reaches the data plane it manages."""

    endpoint_template: str = "http://{pool}-serve-svc.{namespace}.svc:8000"
    prometheus_url: str | None = None
    workers: int = 4
    benchmark_concurrency: int = 2
    # What users' URLs and paths may be read (benchmark items, sources; artifacts, in the pools).
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    # The operator's own secret, from which each pool's benchmark key is derived
    # (`rayservice.benchmark_key`); None: pools serve without API keys (`baton operator --no-auth`).
    benchmark_secret: bytes | None = None


class Controller:
    """The view of the watched objects, and the reconcile of each work key."""

    def __init__(self, kube: Kube, settings: Settings, clock: Callable[[], datetime] | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.work = WorkQueue()
        self.tasks = EvidenceTasks(
            kube,
            self.objects,
            self.work,
            self.endpoint,
            self.clock,
            prometheus_url=settings.prometheus_url,
            benchmark_concurrency=settings.benchmark_concurrency,
            fetch=settings.fetch,
            benchmark_secret=settings.benchmark_secret,
        )
        self.pools = Pools(
            kube,
            self.objects,
            self.clock,
            lambda ns, name: self.work.enqueue((DEPLOYMENT, ns, name)),
            settings.fetch,
            settings.benchmark_secret,
        )
        self.rendered_at: dict[Key, float] = {}  # event-loop time of each pool's last render
        # Per RayService (namespace, name): what each deployment last saw of it (deployment_views).
        self.ray_views: dict[tuple[str, str], dict[str, tuple[Any, ...]]] = {}
        self.reported_generation: dict[tuple[str, str], int | None] = {}  # per RayService, by its runner
        self.engine_cache: dict[tuple[str, str], tuple[datetime, Mapping[str, Any] | None]] = {}

    # --- events in ------------------------------------------------------------------------------

    def observed(self, plural: str, event_type: str | None, body: dict[str, Any]) -> None:
        """Record a watch event and queue the work it implies."""
        metadata = body.get("metadata", {})
        key = (metadata.get("namespace", "default"), metadata.get("name", ""))
        cached = self.objects[plural].get(key)
        if event_type == "DELETED":
            self.objects[plural].pop(key, None)
        elif cached is not None and older(metadata, cached.get("metadata", {})):
            # The event of an earlier write, arriving after the answer to a later one was cached.
            return
        else:
            self.objects[plural][key] = dict(body)
        namespace, name = key
        spec = body.get("spec", {})
        match plural:
            case "modeldeployments":
                self.work.enqueue((DEPLOYMENT, namespace, name))
                if spec.get("pool"):
                    self.schedule_render(namespace, spec["pool"])
            case "modelcandidates":
                if spec.get("deployment"):
                    self.work.enqueue((DEPLOYMENT, namespace, spec["deployment"]))
            case "modelpools":
                self.work.enqueue((POOL, namespace, name))
            case "rayservices":
                before = self.ray_views.get(key)
                after = deployment_views(body, before) if event_type != "DELETED" else {}
                self.ray_views[key] = after
                reported = (body.get("status") or {}).get("observedGeneration")
                newly_reported = reported != self.reported_generation.get(key)
                self.reported_generation[key] = reported
                for (ns, deployment), other in self.objects["modeldeployments"].items():
                    in_pool = ns == namespace and other.get("spec", {}).get("pool") == name
                    # A rollout waits for its weights to be served; the runner may report only the
                    # last of several generations, whose weights equal those served before the
                    # skipped ones (a canary step, then its roll-back): its view did not change,
                    # but it must be woken. Deployments without a rollout are not.
                    rolling = newly_reported and ((other.get("status") or {}).get("candidate") is not None)
                    if in_pool and (
                        before is None or before.get(deployment) != after.get(deployment) or rolling
                    ):
                        self.work.enqueue((DEPLOYMENT, ns, deployment))
            case "inferenceservices":
                self.work.enqueue((DEPLOYMENT, namespace, name))
            case "modelsources":
                self.tasks.keep_polling(namespace, name, deleted=event_type == "DELETED")

    def schedule_render(self, namespace: str, pool: str) -> None:
        """Render the pool now, or when its render window ends if it rendered less than a window ago.

        Leading edge first: a lone change (a canary step) reaches the data plane without waiting.
        """
        key = (POOL, namespace, pool)
        since = asyncio.get_running_loop().time() - self.rendered_at.get(key, float("-inf"))
        self.work.enqueue_later(key, max(0.0, POOL_RENDER_WINDOW_S - since))

    async def prime(self, namespace: str | None, plurals: dict[str, tuple[str, str]]) -> None:
        """Fill the view with one LIST per kind before any reconcile.

        Without it, a restarted operator could reconcile a deployment before the watch delivered
        its candidates, and take a running candidate for a deleted one. Watch events that follow
        carry newer states and overwrite these.
        """
        for plural, (group, version) in plurals.items():
            try:
                bodies = await asyncio.to_thread(self.kube.list, group, version, plural, namespace)
            except ApiException as error:
                if error.status == 404:  # the kind is not installed (e.g. no KServe)
                    continue
                raise
            for body in bodies:
                self.observed(plural, None, body)

    # --- workers --------------------------------------------------------------------------------

    async def run(self, namespace: str | None) -> None:
        workers = (self.work.work(self.process) for _ in range(self.settings.workers))
        await asyncio.gather(*workers, self._resync(namespace))

    async def process(self, key: Key) -> None:
        kind, namespace, name = key
        try:
            if kind == DEPLOYMENT:
                await self.reconcile_deployment(namespace, name)
            else:
                self.rendered_at[key] = asyncio.get_running_loop().time()
                if await self.pools.render(namespace, name):
                    RECONCILES.labels(POOL).inc()
        except Conflict as conflict:
            # Decided on a state that changed since: read it again and decide again.
            log.info("%s; deciding again", conflict)
            plural = "modeldeployments" if kind == DEPLOYMENT else "modelpools"
            await asyncio.to_thread(refresh, self.kube, self.objects, plural, namespace, name)
            self.work.enqueue(key)

    async def _resync(self, namespace: str | None) -> None:
        """Every RESYNC_S: re-read the RayServices; one found newer than the watch delivered
        re-queues its pool's deployments, as its watch event would have (a safety net, as in any
        level-triggered controller; the stalls seen at scale were the quadratic parse, now cached)."""
        while True:
            await asyncio.sleep(RESYNC_S)
            try:
                bodies = await asyncio.to_thread(
                    self.kube.list, RAY_GROUP, RAY_VERSION, RAY_SERVICES, namespace
                )
            except ApiException:
                log.exception("re-reading the RayServices failed; the watch still runs")
                bodies = []
            for body in bodies:
                metadata = body["metadata"]
                cached = self.objects["rayservices"].get(
                    (metadata.get("namespace", "default"), metadata["name"])
                )
                if cached is None or newer(metadata, cached.get("metadata", {})):
                    self.observed("rayservices", None, body)

    # --- deployments ----------------------------------------------------------------------------

    async def reconcile_deployment(self, namespace: str, name: str) -> None:
        body = self.objects["modeldeployments"].get((namespace, name))
        if body is None:
            return
        try:
            deployment = ModelDeployment.model_validate(body)
        except ValidationError as error:
            log.error("modeldeployments/%s/%s is invalid: %d error(s)", namespace, name, error.error_count())
            return
        active = ((body.get("status") or {}).get("candidate") or {}).get("candidate")
        if active and (namespace, active) not in self.objects["modelcandidates"]:
            # Never conclude "withdrawn" from the cache alone: ask the API server.
            await asyncio.to_thread(refresh, self.kube, self.objects, "modelcandidates", namespace, active)
        candidates = [
            candidate
            for (ns, _), document in list(self.objects["modelcandidates"].items())
            if ns == namespace and (candidate := candidate_or_none(document)) is not None
        ]
        engines = None
        if deployment.spec.runtime != Runtime.KSERVE:
            engines = await self._engines(namespace, deployment.spec.pool)
        observations = self._observe(namespace, deployment, engines)
        result = reconcile(deployment, candidates, observations, self.clock())
        RECONCILES.labels(DEPLOYMENT).inc()
        status = result.status.to_wire()
        status["endpoint"] = self.endpoint(namespace, deployment.spec.pool) + "/v1"
        if status != body.get("status"):
            # The status first: it is what a restart resumes from, and a decision made on a state
            # that changed meanwhile must leave no trace (no Event, no data-plane change).
            written = await asyncio.to_thread(
                self.kube.patch_status,
                "modeldeployments",
                namespace,
                name,
                status,
                body["metadata"]["resourceVersion"],
            )
            # The watch event follows; until then the next reconcile must see what was written.
            self.objects["modeldeployments"][(namespace, name)] = written
        ROLLOUT.observe_deployment(namespace, name, result.status)
        for action in result.actions:
            if isinstance(action, EmitEvent):
                await asyncio.to_thread(
                    self.kube.event, body, "ModelDeployment", action.type, action.reason, action.message
                )
        touches_data_plane = any(
            isinstance(a, DeployRevision | SetWeights | RemoveRevision) for a in result.actions
        )
        if touches_data_plane or status != body.get("status"):
            if deployment.spec.runtime == Runtime.KSERVE:
                await self._apply_inference_service(namespace, name)
            else:
                self.schedule_render(namespace, deployment.spec.pool)
        for action in result.actions:
            if isinstance(action, UpdateCandidateStatus):
                await asyncio.to_thread(apply_candidate_update, self.tasks.store(namespace), action)
            elif isinstance(action, RunBenchmark):
                self.tasks.start_benchmark(namespace, deployment, action)
            elif isinstance(action, ObserveCanary):
                self.tasks.start_canary(namespace, deployment, action)
        if result.requeue_after is not None:
            self.work.enqueue_later((DEPLOYMENT, namespace, name), max(result.requeue_after, 0.05))
        if any(health.message == ENGINE_STARTING for health in observations.revisions.values()):
            # No RayService event will tell when the model is ready: the ingress is asked again.
            self.work.enqueue_later((DEPLOYMENT, namespace, name), ENGINE_CACHE_S)

    async def _engines(self, namespace: str, pool: str) -> Mapping[str, Any] | None:
        """Per-revision engine readiness from the pool's ingress, fetched at most once a second per pool."""
        now = self.clock()
        cached = self.engine_cache.get((namespace, pool))
        if cached is not None and (now - cached[0]).total_seconds() < ENGINE_CACHE_S:
            return cached[1]
        statuses = await asyncio.to_thread(self.tasks.ingress(namespace, pool).revision_statuses)
        self.engine_cache[(namespace, pool)] = (now, statuses)
        return statuses

    def _observe(
        self, namespace: str, deployment: ModelDeployment, engines: Mapping[str, Any] | None
    ) -> Observations:
        name = deployment.metadata.name
        if deployment.spec.runtime == Runtime.KSERVE:
            revisions = inference_service.observe_revisions(
                self.objects["inferenceservices"].get((namespace, name))
            )
            served = None
        else:
            ray = self.objects["rayservices"].get((namespace, deployment.spec.pool))
            revisions, served = observe_revisions(
                name,
                ray,
                self.pools.unschedulable.get((namespace, deployment.spec.pool), ()),
                None if engines is None else engines.get(name, {}),
            )
        return Observations(
            revisions=revisions,
            served_weights=served,
            offline=self.tasks.offline.get((namespace, name)),
            online=self.tasks.online.get((namespace, name)),
        )

    def endpoint(self, namespace: str, pool: str) -> str:
        return self.settings.endpoint_template.format(pool=pool, namespace=namespace).rstrip("/")

    async def _apply_inference_service(self, namespace: str, name: str) -> None:
        body = self.objects["modeldeployments"].get((namespace, name))
        if body is None or not body.get("status", {}).get("champion"):
            return
        manifest = inference_service.inference_service(ModelDeployment.model_validate(body), body["metadata"])
        await asyncio.to_thread(
            self.kube.apply_owned, KSERVE_GROUP, KSERVE_VERSION, INFERENCE_SERVICES, manifest
        )
