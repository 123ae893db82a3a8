"""The operator's imperative shell: watch events in, `baton.rollout.reconcile` in the middle, API writes out.

Kopf delivers watch events for every kind (`baton.k8s.operator` wires the handlers); this
controller keeps the latest body of each object in memory, turns events into work keys
(a deployment, or a pool), and a few async workers process the keys, coalescing bursts. Per
deployment key it reads the world (RayService status, gate results), calls the pure core,
then emits Events, replaces `.status` (only if it changed), updates candidate statuses and
schedules a pool render; per pool key it renders the serve config into the pool's RayService.

Nothing here is remembered across restarts except what is in the API server: benchmark runs
and canary baselines are held in memory and simply redone after a crash, which the core
tolerates by construction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from prometheus_client import REGISTRY, Counter
from pydantic import ValidationError

from baton.api import ModelCandidate, ModelDeployment, ModelPool, ModelSource
from baton.api.candidate import BenchmarkScore, ModelCandidateStatus
from baton.api.common import GROUP, VERSION, Condition, ConditionStatus
from baton.api.deployment import Runtime
from baton.k8s import gates, inference_service
from baton.k8s.kube import (
    INFERENCE_SERVICES,
    KSERVE_GROUP,
    KSERVE_VERSION,
    RAY_GROUP,
    RAY_SERVICES,
    RAY_VERSION,
    Kube,
)
from baton.k8s.rayservice import ENGINE_STARTING, deployment_views, observe_revisions, ray_service
from baton.k8s.sources import DigestCache, Release, candidate_manifest, discover
from baton.observability.rollout_metrics import RolloutMetrics
from baton.rollout import (
    DeployRevision,
    EmitEvent,
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RemoveRevision,
    RunBenchmark,
    SetWeights,
    UpdateCandidateStatus,
    format_time,
    merge_conditions,
    next_sample_delay,
    parse_duration,
    parse_time,
    reconcile,
)
from baton.rollout.render import RenderedPool, render_pool

log = logging.getLogger("baton.operator")
RECONCILES = Counter("baton_operator_reconciles", "Reconciles run, by kind of work key.", ["kind"])
# Phase, weight and decisions of every deployment, for the dashboards and the rollout alerts.
ROLLOUT = RolloutMetrics(REGISTRY)

Key = tuple[str, str, str]  # (kind, namespace, name)
DEPLOYMENT, POOL = "deployment", "pool"
# A pool renders at most once per window: a burst of deployment changes becomes one RayService write.
POOL_RENDER_WINDOW_S = 0.1
ENGINE_CACHE_S = 1.0
# The RayServices are re-read this often, as level-triggered controllers resync: a watch event
# lost then costs seconds, never a rollout stuck for good.
RESYNC_S = 10.0


def newer(listed: Mapping[str, Any], cached: Mapping[str, Any]) -> bool:
    """Whether a listed object is newer than the cached one. resourceVersion is opaque to clients in
    general, but it is etcd's revision on every API server baton runs against."""
    try:
        return int(listed["resourceVersion"]) > int(cached["resourceVersion"])
    except (KeyError, ValueError):
        return listed.get("resourceVersion") != cached.get("resourceVersion")


@dataclass(frozen=True)
class Settings:
    """How the operator reaches the data plane it manages."""

    endpoint_template: str = "http://{pool}-serve-svc.{namespace}.svc:8000"
    prometheus_url: str | None = None
    workers: int = 4
    benchmark_concurrency: int = 2


class Controller:
    """In-memory view of the watched objects plus the work queue that reconciles them."""

    def __init__(self, kube: Kube, settings: Settings, clock: Callable[[], datetime] | None = None) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
        self.unschedulable: dict[tuple[str, str], tuple[str, ...]] = {}
        self.offline: dict[tuple[str, str], OfflineResult] = {}
        self.online: dict[tuple[str, str], OnlineResult] = {}
        self.running: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self.canary_baselines: dict[tuple[str, str, str, int], dict[str, gates.Counts]] = {}
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.queued: set[Key] = set()
        self.processing: set[Key] = set()
        self.dirty: set[Key] = set()
        self.timers: dict[Key, asyncio.TimerHandle] = {}
        self.rendered_at: dict[Key, float] = {}  # event-loop time of each pool's last render
        # Per RayService (namespace, name): what each deployment last saw of it (deployment_views).
        self.ray_views: dict[tuple[str, str], dict[str, tuple[Any, ...]]] = {}
        self.engine_cache: dict[tuple[str, str], tuple[datetime, dict[str, dict[str, Any]] | None]] = {}

    # --- events in ------------------------------------------------------------------------------

    def observed(self, plural: str, event_type: str | None, body: dict[str, Any]) -> None:
        """Record a watch event and queue the work it implies."""
        metadata = body.get("metadata", {})
        key = (metadata.get("namespace", "default"), metadata.get("name", ""))
        if event_type == "DELETED":
            self.objects[plural].pop(key, None)
        else:
            self.objects[plural][key] = dict(body)
        namespace, name = key
        spec = body.get("spec", {})
        match plural:
            case "modeldeployments":
                self.enqueue((DEPLOYMENT, namespace, name))
                if spec.get("pool"):
                    self.schedule_render(namespace, spec["pool"])
            case "modelcandidates":
                if spec.get("deployment"):
                    self.enqueue((DEPLOYMENT, namespace, spec["deployment"]))
            case "modelpools":
                self.enqueue((POOL, namespace, name))
            case "rayservices":
                before = self.ray_views.get(key)
                after = deployment_views(body, before) if event_type != "DELETED" else {}
                self.ray_views[key] = after
                for (ns, deployment), other in self.objects["modeldeployments"].items():
                    in_pool = ns == namespace and other.get("spec", {}).get("pool") == name
                    if in_pool and (before is None or before.get(deployment) != after.get(deployment)):
                        self.enqueue((DEPLOYMENT, ns, deployment))
            case "inferenceservices":
                self.enqueue((DEPLOYMENT, namespace, name))
            case "modelsources":
                self._keep_polling(namespace, name, deleted=event_type == "DELETED")

    def enqueue(self, key: Key) -> None:
        if key not in self.queued:
            self.queued.add(key)
            self.queue.put_nowait(key)

    def enqueue_later(self, key: Key, delay: float) -> None:
        """Queue `key` after `delay`; of several pending requests for one key, the earliest wins."""
        if key in self.queued:
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        pending = self.timers.get(key)
        if pending is not None:
            if pending.when() <= due:
                return
            pending.cancel()

        def fire() -> None:
            self.timers.pop(key, None)
            self.enqueue(key)

        self.timers[key] = loop.call_at(due, fire)

    def schedule_render(self, namespace: str, pool: str) -> None:
        """Render the pool now, or when its render window ends if it rendered less than a window ago.

        Leading edge first: a lone change (a canary step) reaches the data plane without waiting.
        """
        key = (POOL, namespace, pool)
        since = asyncio.get_running_loop().time() - self.rendered_at.get(key, float("-inf"))
        self.enqueue_later(key, max(0.0, POOL_RENDER_WINDOW_S - since))

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
        await asyncio.gather(*(self._worker() for _ in range(self.settings.workers)), self._resync(namespace))

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

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            if key in self.processing:
                # One worker per key, as in any controller: two reconciles of one deployment could
                # write statuses computed from different views. Run it again once the first is done.
                self.dirty.add(key)
                self.queue.task_done()
                continue
            self.processing.add(key)
            try:
                if key[0] == DEPLOYMENT:
                    await self.reconcile_deployment(key[1], key[2])
                else:
                    await self.render_pool(key[1], key[2])
            except Exception:
                log.exception("reconciling %s/%s/%s failed; retrying in 5 s", *key)
                self.enqueue_later(key, 5.0)
            finally:
                self.processing.discard(key)
                if key in self.dirty:
                    self.dirty.discard(key)
                    self.enqueue(key)
                self.queue.task_done()

    # --- deployments ----------------------------------------------------------------------------

    async def reconcile_deployment(self, namespace: str, name: str) -> None:
        body = self.objects["modeldeployments"].get((namespace, name))
        if body is None:
            return
        try:
            deployment = ModelDeployment.model_validate(body)
        except ValidationError as error:
            log.error("modeldeployments/%s/%s is invalid: %s", namespace, name, error)
            return
        active = ((body.get("status") or {}).get("candidate") or {}).get("candidate")
        if active and (namespace, active) not in self.objects["modelcandidates"]:
            # Never conclude "withdrawn" from the cache alone: ask the API server.
            found = await asyncio.to_thread(
                self.kube.get, GROUP, VERSION, "modelcandidates", namespace, active
            )
            if found is not None:
                self.objects["modelcandidates"][(namespace, active)] = found
        candidates = [
            candidate
            for (ns, _), document in list(self.objects["modelcandidates"].items())
            if ns == namespace and (candidate := _candidate_or_none(document)) is not None
        ]
        engines = None
        if deployment.spec.runtime != Runtime.KSERVE:
            engines = await self._engines(namespace, deployment.spec.pool)
        observations = self._observe(namespace, deployment, engines)
        result = reconcile(deployment, candidates, observations, self.clock())
        RECONCILES.labels(DEPLOYMENT).inc()
        ROLLOUT.observe_deployment(namespace, name, result.status)
        for action in result.actions:
            if isinstance(action, EmitEvent):
                await asyncio.to_thread(
                    self.kube.event, body, "ModelDeployment", action.type, action.reason, action.message
                )
        status = result.status.to_wire()
        status["endpoint"] = self.endpoint(namespace, deployment.spec.pool) + "/v1"
        if status != body.get("status"):
            await asyncio.to_thread(self.kube.patch_status, "modeldeployments", namespace, name, status)
            # The watch event follows; until then the next reconcile must see what was written.
            self.objects["modeldeployments"][(namespace, name)] = {**body, "status": status}
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
                await self._update_candidate(namespace, action)
            elif isinstance(action, RunBenchmark):
                self._start_benchmark(namespace, deployment, action)
            elif isinstance(action, ObserveCanary):
                self._start_canary_observation(namespace, deployment, action)
        if result.requeue_after is not None:
            self.enqueue_later((DEPLOYMENT, namespace, name), max(result.requeue_after, 0.05))
        if any(health.message == ENGINE_STARTING for health in observations.revisions.values()):
            # No RayService event will tell when the model is ready: the ingress is asked again.
            self.enqueue_later((DEPLOYMENT, namespace, name), ENGINE_CACHE_S)

    async def _engines(self, namespace: str, pool: str) -> dict[str, dict[str, Any]] | None:
        """Per-revision engine readiness from the pool's ingress, fetched at most once a second per pool."""
        now = self.clock()
        cached = self.engine_cache.get((namespace, pool))
        if cached is not None and (now - cached[0]).total_seconds() < ENGINE_CACHE_S:
            return cached[1]
        statuses = await asyncio.to_thread(gates.engine_statuses, self.endpoint(namespace, pool))
        self.engine_cache[(namespace, pool)] = (now, statuses)
        return statuses

    def _observe(
        self, namespace: str, deployment: ModelDeployment, engines: dict[str, dict[str, Any]] | None
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
                self.unschedulable.get((namespace, deployment.spec.pool), ()),
                None if engines is None else engines.get(name, {}),
            )
        return Observations(
            revisions=revisions,
            served_weights=served,
            offline=self.offline.get((namespace, name)),
            online=self.online.get((namespace, name)),
        )

    def endpoint(self, namespace: str, pool: str) -> str:
        return self.settings.endpoint_template.format(pool=pool, namespace=namespace).rstrip("/")

    async def _update_candidate(self, namespace: str, action: UpdateCandidateStatus) -> None:
        body = self.objects["modelcandidates"].get((namespace, action.candidate))
        if body is None:
            return
        previous = body.get("status") or {}
        status = ModelCandidateStatus(
            observed_generation=body["metadata"].get("generation"),
            phase=action.phase,
            message=action.message,
            decision=action.decision,
            scores=previous.get("scores", []),
            record=action.record if action.record is not None else previous.get("record", []),
        ).to_wire()
        await asyncio.to_thread(
            self.kube.patch_status, "modelcandidates", namespace, action.candidate, status
        )
        self.objects["modelcandidates"][(namespace, action.candidate)] = {**body, "status": status}
        if action.decision is not None:
            await asyncio.to_thread(
                self.kube.event,
                body,
                "ModelCandidate",
                "Normal" if action.decision.verdict == "Promote" else "Warning",
                action.decision.reason,
                action.decision.message,
            )

    async def _record_scores(self, namespace: str, name: str, scores: list[BenchmarkScore]) -> None:
        """Put the benchmark scores on the ModelCandidate's status, next to the decision they led to."""
        body = self.objects["modelcandidates"].get((namespace, name))
        if body is None:
            return
        status = {**(body.get("status") or {}), "scores": [score.to_wire() for score in scores]}
        # The cache first: a status update racing this one must carry the scores, not drop them.
        self.objects["modelcandidates"][(namespace, name)] = {**body, "status": status}
        await asyncio.to_thread(self.kube.patch_status, "modelcandidates", namespace, name, status)

    def _start_benchmark(self, namespace: str, deployment: ModelDeployment, action: RunBenchmark) -> None:
        key = ("benchmark", namespace, deployment.metadata.name, action.candidate, *action.benchmarks)
        if key in self.running:
            return
        endpoint = self.endpoint(namespace, deployment.spec.pool)
        benchmarks = {name: self.objects["benchmarks"].get((namespace, name)) for name in action.benchmarks}

        async def run() -> None:
            try:
                outcome, scores = await asyncio.to_thread(
                    gates.offline_outcome,
                    self.kube,
                    endpoint,
                    deployment,
                    action,
                    benchmarks,
                    self.settings.benchmark_concurrency,
                )
                self.offline[(namespace, deployment.metadata.name)] = OfflineResult(
                    action.candidate, action.benchmarks, outcome
                )
                candidate = deployment.status.candidate if deployment.status else None
                if candidate is not None and candidate.candidate is not None and scores:
                    await self._record_scores(namespace, candidate.candidate, scores)
            finally:
                self.running.pop(key, None)
            self.enqueue((DEPLOYMENT, namespace, deployment.metadata.name))

        self.running[key] = asyncio.get_running_loop().create_task(run())

    def _start_canary_observation(
        self, namespace: str, deployment: ModelDeployment, action: ObserveCanary
    ) -> None:
        name = deployment.metadata.name
        key = ("canary", namespace, name, action.candidate, str(action.step))
        if key in self.running:
            return
        endpoint = self.endpoint(namespace, deployment.spec.pool)
        baseline_key = (namespace, name, action.candidate, action.step)

        async def run() -> None:
            started = self.clock()
            previous = self.online.get((namespace, name))
            try:
                outcome, requests = await asyncio.to_thread(
                    gates.canary_outcome,
                    endpoint,
                    deployment,
                    action,
                    self.canary_baselines.setdefault(baseline_key, {}),
                    self.settings.prometheus_url,
                )
                self.online[(namespace, name)] = OnlineResult(
                    action.candidate, action.step, requests, outcome, started
                )
            finally:
                self.running.pop(key, None)
            # A sample of an earlier step or candidate was read before this step began, so it
            # counts as read before this step's end, like no sample at all.
            read_before = previous.observed_at if previous else None
            delay = next_sample_delay(read_before, started, self.clock(), parse_time(action.until))
            self.enqueue_later((DEPLOYMENT, namespace, name), delay)

        self.running[key] = asyncio.get_running_loop().create_task(run())

    async def _apply_inference_service(self, namespace: str, name: str) -> None:
        body = self.objects["modeldeployments"].get((namespace, name))
        if body is None or not body.get("status", {}).get("champion"):
            return
        manifest = inference_service.inference_service(ModelDeployment.model_validate(body), body["metadata"])
        await asyncio.to_thread(
            self.kube.apply_owned, KSERVE_GROUP, KSERVE_VERSION, INFERENCE_SERVICES, manifest
        )

    # --- model sources --------------------------------------------------------------------------

    def _keep_polling(self, namespace: str, name: str, *, deleted: bool) -> None:
        key = ("source", namespace, name)
        if deleted:
            task = self.running.pop(key, None)
            if task is not None:
                task.cancel()
        elif key not in self.running:
            self.running[key] = asyncio.get_running_loop().create_task(self._poll_source(namespace, name))

    async def _poll_source(self, namespace: str, name: str) -> None:
        digests = DigestCache()
        while (body := self.objects["modelsources"].get((namespace, name))) is not None:
            source = ModelSource.model_validate(body)
            previous = body.get("status") or {}
            created, condition = 0, ("True", "Polled", "")
            releases: list[Release] = []
            try:
                releases = await asyncio.to_thread(discover, source, digests)
                for release in releases:
                    manifest = candidate_manifest(body, release)
                    if (namespace, manifest["metadata"]["name"]) in self.objects["modelcandidates"]:
                        continue
                    created += await asyncio.to_thread(self.kube.create_candidate, namespace, manifest)
            except Exception as error:  # a bad index or an unreadable volume: report it, keep polling
                condition = ("False", "PollFailed", str(error)[:500])
            stamp = format_time(self.clock())
            ready = merge_conditions(
                [Condition.model_validate(c) for c in previous.get("conditions", [])],
                [("Ready", ConditionStatus(condition[0]), condition[1], condition[2])],
                body["metadata"].get("generation"),
                stamp,
            )
            status = {
                "observedGeneration": body["metadata"].get("generation"),
                "lastPollTime": stamp,
                "discovered": previous.get("discovered", 0) + created,
                "conditions": [c.to_wire() for c in ready],
            }
            last = releases[-1].version if releases else previous.get("lastVersion")
            if last:
                status["lastVersion"] = last
            await asyncio.to_thread(self.kube.patch_status, "modelsources", namespace, name, status)
            self.objects["modelsources"][(namespace, name)] = {**body, "status": status}
            await asyncio.sleep(parse_duration(source.spec.poll_interval))

    # --- pools ----------------------------------------------------------------------------------

    async def render_pool(self, namespace: str, name: str) -> None:
        body = self.objects["modelpools"].get((namespace, name))
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return
        self.rendered_at[(POOL, namespace, name)] = asyncio.get_running_loop().time()
        pool = ModelPool.model_validate(body)
        members = [
            deployment
            for (ns, _), document in list(self.objects["modeldeployments"].items())
            if ns == namespace
            and document.get("spec", {}).get("pool") == name
            and (deployment := _deployment_or_none(document)) is not None
        ]
        rendered = render_pool(pool, members)
        RECONCILES.labels(POOL).inc()
        manifest = ray_service(body, rendered)
        current = self.objects["rayservices"].get((namespace, manifest["metadata"]["name"]))
        if current is None or current.get("spec") != manifest["spec"]:
            await asyncio.to_thread(self.kube.apply_owned, RAY_GROUP, RAY_VERSION, RAY_SERVICES, manifest)
        previous = self.unschedulable.get((namespace, name), ())
        self.unschedulable[(namespace, name)] = rendered.unschedulable
        for revision in set(previous) ^ set(rendered.unschedulable):
            for deployment in members:
                if revision.startswith(f"{deployment.metadata.name}-"):
                    self.enqueue((DEPLOYMENT, namespace, deployment.metadata.name))
        status = self._pool_status(body, rendered, len(members), current)
        if status != body.get("status"):
            await asyncio.to_thread(self.kube.patch_status, "modelpools", namespace, name, status)
            self.objects["modelpools"][(namespace, name)] = {**body, "status": status}

    def _pool_status(
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


def _candidate_or_none(document: dict[str, Any]) -> ModelCandidate | None:
    try:
        return ModelCandidate.model_validate(document)
    except ValidationError as error:
        log.error("modelcandidates/%s is invalid: %s", document.get("metadata", {}).get("name"), error)
        return None


def _deployment_or_none(document: dict[str, Any]) -> ModelDeployment | None:
    try:
        return ModelDeployment.model_validate(document)
    except ValidationError:
        return None
