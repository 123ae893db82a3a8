"""The operator's evidence tasks: asyncio tasks that run the evidence layer in threads and requeue.

One task per running benchmark, per canary sample and per ModelSource. What they measure, and how
a failure is recorded, is `baton.evidence`'s (the same for `baton up`); this module only decides
when they run on the event loop and which deployment key to wake afterwards. Results are held in
memory and simply redone after a crash, which the core tolerates by construction. A task whose
own shell code raises is logged and its deployment requeued, never dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

import httpx
from pydantic import ValidationError

from baton.api import ModelDeployment, ModelSource
from baton.evidence.benchmarks import BenchmarkSettings, run_benchmarks
from baton.evidence.candidates import record_scores
from baton.evidence.ingress import Ingress
from baton.evidence.samples import CanarySampler, parse_exposition
from baton.evidence.sources import SourcePoller
from baton.k8s.kube import Kube
from baton.k8s.queue import RETRY_S, WorkQueue
from baton.k8s.rayservice import benchmark_key
from baton.k8s.store import KubeStore, Objects
from baton.rollout import (
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RunBenchmark,
    next_sample_delay,
    parse_time,
)
from baton_serving.config import FetchPolicy

log = logging.getLogger("baton.operator")
DEPLOYMENT = "deployment"
# One client for the frequent reads of the pools' ingresses (revision statuses every second, canary
# samples every 2 s).
DATA_PLANE_CLIENT = httpx.Client(timeout=10.0)


class EvidenceTasks:
    """Benchmark runs, canary samples and source polls of every namespace, and their latest results."""

    def __init__(
        self,
        kube: Kube,
        objects: Objects,
        work: WorkQueue,
        endpoint: Callable[[str, str], str],
        clock: Callable[[], datetime],
        *,
        prometheus_url: str | None,
        benchmark_concurrency: int,
        fetch: FetchPolicy,
        benchmark_secret: bytes | None,
    ) -> None:
        self.kube = kube
        self.objects = objects
        self.work = work
        self.endpoint = endpoint
        self.clock = clock
        self.prometheus_url = prometheus_url
        self.fetch = fetch
        self.benchmark_secret = benchmark_secret
        self.benchmark = BenchmarkSettings(fetch=fetch, concurrency=benchmark_concurrency)
        self.offline: dict[tuple[str, str], OfflineResult] = {}
        self.online: dict[tuple[str, str], OnlineResult] = {}
        self.running: dict[tuple[str, ...], asyncio.Task[None]] = {}
        self._samplers: dict[str, CanarySampler] = {}

    def store(self, namespace: str) -> KubeStore:
        return KubeStore(self.kube, self.objects, namespace)

    def ingress(self, namespace: str, pool: str) -> Ingress:
        key = None if self.benchmark_secret is None else benchmark_key(self.benchmark_secret, namespace, pool)
        return Ingress(self.endpoint(namespace, pool), DATA_PLANE_CLIENT, api_key=key)

    def _start(
        self,
        key: tuple[str, ...],
        body: Callable[[], Coroutine[Any, Any, None]],
        on_crash: Callable[[], None],
    ) -> None:
        """Run `body` once per key at a time; if the shell's own code in it raises, log and `on_crash`."""
        if key in self.running:
            return

        async def guarded() -> None:
            try:
                await body()
            except Exception:
                log.exception("the %s task of %s/%s failed; retrying in %.0f s", *key[:3], RETRY_S)
                asyncio.get_running_loop().call_later(RETRY_S, on_crash)
            finally:
                self.running.pop(key, None)

        self.running[key] = asyncio.get_running_loop().create_task(guarded())

    # --- benchmarks -----------------------------------------------------------------------------

    def start_benchmark(self, namespace: str, deployment: ModelDeployment, action: RunBenchmark) -> None:
        name = deployment.metadata.name
        documents = {each: self.objects["benchmarks"].get((namespace, each)) for each in action.benchmarks}
        store = self.store(namespace)

        async def run() -> None:
            try:
                outcome = await asyncio.to_thread(
                    run_benchmarks,
                    self.ingress(namespace, deployment.spec.pool),
                    store,
                    deployment,
                    action,
                    documents,
                    self.benchmark,
                )
                self.offline[(namespace, name)] = outcome.result
                candidate = deployment.status.candidate if deployment.status else None
                if candidate is not None and candidate.candidate is not None:
                    await asyncio.to_thread(record_scores, store, candidate.candidate, outcome.scores)
            finally:
                self.work.enqueue((DEPLOYMENT, namespace, name))

        wake = (DEPLOYMENT, namespace, name)
        self._start(
            ("benchmark", namespace, name, action.candidate, *action.benchmarks),
            run,
            lambda: self.work.enqueue(wake),
        )

    # --- canary samples -------------------------------------------------------------------------

    def sampler(self, namespace: str) -> CanarySampler:
        if namespace not in self._samplers:
            self._samplers[namespace] = CanarySampler(self.store(namespace), self.prometheus_url)
        return self._samplers[namespace]

    def start_canary(self, namespace: str, deployment: ModelDeployment, action: ObserveCanary) -> None:
        name = deployment.metadata.name
        ingress = self.ingress(namespace, deployment.spec.pool)
        wake = (DEPLOYMENT, namespace, name)

        async def run() -> None:
            started = self.clock()
            previous = self.online.get((namespace, name))
            sample = await asyncio.to_thread(
                self.sampler(namespace).sample,
                deployment,
                action,
                lambda: parse_exposition(ingress.metrics_text()),
                started,
            )
            if sample.result is not None:
                self.online[(namespace, name)] = sample.result
            if sample.failure is not None and sample.result is None:
                self.work.enqueue_later(wake, sample.failure.retry_in)
                return
            # A sample of an earlier step or candidate was read before this step began, so it
            # counts as read before this step's end, like no sample at all.
            read_before = previous.observed_at if previous else None
            delay = next_sample_delay(read_before, started, self.clock(), parse_time(action.until))
            self.work.enqueue_later(wake, delay)

        self._start(
            ("canary", namespace, name, action.candidate, str(action.step)),
            run,
            lambda: self.work.enqueue(wake),
        )

    # --- model sources --------------------------------------------------------------------------

    def keep_polling(self, namespace: str, name: str, *, deleted: bool) -> None:
        key = ("source", namespace, name)
        if deleted:
            task = self.running.pop(key, None)
            if task is not None:
                task.cancel()
            return
        poller = SourcePoller(self.store(namespace), self.fetch)

        async def run() -> None:
            while (body := self.objects["modelsources"].get((namespace, name))) is not None:
                try:
                    source = ModelSource.model_validate(body)
                except ValidationError:
                    log.error(
                        "modelsources/%s/%s is invalid; polling stops until it changes", namespace, name
                    )
                    return
                poll = await asyncio.to_thread(poller.poll, source, self.clock())
                await asyncio.sleep(poll.next_in)

        self._start(key, run, lambda: self.keep_polling(namespace, name, deleted=False))
