"""`baton up`: the local shell's loop over the same rollout core and analysis as the operator.

Each tick reads the world (candidate files, release directories, data-plane health and metrics),
calls `baton.rollout.reconcile` for every deployment, persists the returned status before doing
anything else, carries out the actions, and applies the pool's rendered serve config to the local
Ray Serve. Benchmarks run in a background thread so the loop keeps serving canaries meanwhile.

A restart resumes from the stored status: the rollout core needs nothing else, the serve config
is rendered from status, and a benchmark interrupted by the restart is simply asked for again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from baton.analysis.gates import benchmark_scores, offline_outcome, online_outcome
from baton.analysis.measurements import BenchmarkRun
from baton.analysis.providers.benchmark import BenchmarkRunner
from baton.analysis.providers.prometheus import PrometheusProvider, render_query
from baton.analysis.sanity import evaluation_failed
from baton.api import (
    Benchmark,
    ModelCandidate,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelPool,
)
from baton.api.candidate import BenchmarkScore, ModelCandidateStatus
from baton.api.deployment import MetricProvider, Phase
from baton.local.dataplane import LocalServe
from baton.local.discovery import discover
from baton.local.loader import (
    LoadedResource,
    Problem,
    ResourceLoadError,
    ResourceSet,
    load_file,
    load_resources,
)
from baton.local.recorder import MetricsRecorder
from baton.local.store import LocalStore
from baton.rollout import (
    EmitEvent,
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RunBenchmark,
    UpdateCandidateStatus,
    closes_step,
    parse_duration,
    parse_time,
    reconcile,
)
from baton.rollout.machine import FINAL_CANDIDATE_PHASES, revision_name
from baton.rollout.render import render_pool
from baton_serving.artifacts import ArtifactError, fetch_verified

logger = logging.getLogger("baton.local")

IDLE_TICK_SECONDS = 1.0
BUSY_TICK_SECONDS = 0.05
MAX_TICK_SECONDS = 2.0


@dataclass(frozen=True)
class RuntimeOptions:
    """How `baton up` runs; the CLI and the demo build one."""

    paths: list[Path]
    port: int = 8000
    prometheus_url: str | None = None
    fresh: bool = False
    show_benchmark_progress: bool = True


@dataclass
class _Benchmarks:
    """The one running or finished benchmark per (deployment, candidate revision, benchmarks)."""

    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="benchmark")
    )
    runs: dict[tuple[str, str, tuple[str, ...]], Future[OfflineResult]] = field(default_factory=dict)


def preflight_problems(resources: ResourceSet) -> list[Problem]:
    """What cluster admission cannot see but local mode must refuse before serving anything.

    Every champion's artifact must be the pinned bytes (a candidate's is checked by the data
    plane and fails only the candidate), and local mode serves exactly one pool.
    """
    problems: list[Problem] = []
    used_pools = sorted({deployment.spec.pool for deployment in resources.deployments.values()})
    if len(used_pools) > 1:
        origin = resources.origins[("ModelPool", used_pools[1])]
        problems.append(
            Problem(
                origin.path,
                origin.line_of(["metadata", "name"]),
                f"local mode serves one ModelPool, the input uses {len(used_pools)}: {', '.join(used_pools)}",
                resource=origin.label,
                field="metadata.name",
            )
        )
    for deployment in resources.deployments.values():
        artifact = deployment.spec.model.artifact
        origin = resources.origins[("ModelDeployment", deployment.metadata.name)]
        if artifact.uri.startswith(("http://", "https://")):
            continue
        try:
            fetch_verified(artifact.uri, artifact.digest)
        except ArtifactError as error:
            problems.append(
                Problem(
                    origin.path,
                    origin.line_of(["spec", "model", "artifact", "digest"]),
                    str(error),
                    resource=origin.label,
                    field="spec.model.artifact",
                )
            )
    return problems


def now_utc() -> datetime:
    return datetime.now(UTC)


class LocalRuntime:
    """Owns the store, the data plane, the benchmark thread and the reconcile loop of one `baton up`."""

    def __init__(
        self, options: RuntimeOptions, store: LocalStore, resources: ResourceSet, console: Console
    ) -> None:
        self.options = options
        self.store = store
        self.console = console
        self.pool: ModelPool = next(
            resources.pools[name] for name in sorted({d.spec.pool for d in resources.deployments.values()})
        )
        self.benchmark_specs: dict[str, Benchmark] = resources.benchmarks
        self.sources = resources.sources
        self.deployments: dict[str, ModelDeployment] = {
            name: store.with_stored_status(deployment) for name, deployment in resources.deployments.items()
        }
        self.candidates: dict[str, ModelCandidate] = {
            name: store.with_stored_status(candidate) for name, candidate in resources.candidates.items()
        }
        self._input_candidates = set(resources.candidates)
        self._rejected_files: set[Path] = set()
        self._last_poll: dict[str, float] = {}
        self.serve = LocalServe(options.port)
        self.recorder = MetricsRecorder()
        self.prometheus = PrometheusProvider(options.prometheus_url) if options.prometheus_url else None
        self._benchmarks = _Benchmarks()
        self._offline: dict[str, OfflineResult] = {}
        # Benchmark scores by candidate revision, written by the benchmark thread, shown on the candidate.
        self._scores: dict[str, list[BenchmarkScore]] = {}
        self._online: dict[str, OnlineResult] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_event: Callable[[str, EmitEvent], None] | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.serve.base_url}/v1"

    # --- set-up ----------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls, options: RuntimeOptions, store: LocalStore, console: Console | None = None
    ) -> LocalRuntime:
        """Load and check the input; raises `ResourceLoadError` (nothing started) when it has problems."""
        console = console or Console(stderr=True)
        if options.fresh and store.state_dir.exists():
            for part in ("objects", "candidates", "decisions.jsonl", "events.jsonl"):
                target = store.state_dir / part
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        paths = list(options.paths)
        if not paths:
            from baton.demo import render_example_resources

            paths = [render_example_resources(store.state_dir / "resources", console=console)]
        if store.candidates_dir.is_dir() and any(store.candidates_dir.iterdir()):
            paths.append(store.candidates_dir)
        resources = load_resources(paths)
        problems = preflight_problems(resources)
        if problems:
            raise ResourceLoadError(problems)
        return cls(options, store, resources, console)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start Ray Serve, serve every champion, then run the loop in a background thread."""
        self.console.log(f"starting Ray Serve on {self.serve.base_url} (pool {self.pool.metadata.name})")
        self.serve.start()
        self.store.write_running(
            {
                "pid": os.getpid(),
                "endpoint": self.endpoint,
                "pool": self.pool.metadata.name,
                "started": now_utc().isoformat(),
            }
        )
        self.tick()
        self.serve.wait_for_ingress()
        self._thread = threading.Thread(target=self._loop, name="baton-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop, the benchmark thread and Ray Serve; the stored status stays for a restart."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._benchmarks.executor.shutdown(wait=False, cancel_futures=True)
        try:
            self.serve.stop()
        finally:
            self.store.clear_running()

    def run_until_interrupted(self) -> None:
        """`baton up` in the foreground until Ctrl-C (or SIGTERM), then a clean stop.

        Events are logged as they happen and the deployments table is printed whenever a phase,
        weight or revision changes; benchmark runs show progress bars (`baton status -w` in
        another terminal gives a live table).
        """
        from baton.local.view import deployments_table

        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.start()
            self.console.log(
                f"serving {', '.join(sorted(self.deployments))} at {self.endpoint}; "
                f"state in {self.store.state_dir}; Ctrl-C stops"
            )
            shown = None
            while not self._stop.is_set():
                current = self._summary()
                if current != shown:
                    self.console.print(deployments_table(list(self.deployments.values())))
                    shown = current
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.console.log("stopping: the next `baton up` resumes from the stored state")
        finally:
            self.stop()
            signal.signal(signal.SIGTERM, previous)

    def _summary(self) -> tuple:
        return tuple(
            (
                name,
                status.phase,
                status.canary_weight,
                status.champion.version if status.champion else None,
                status.candidate.version if status.candidate else None,
            )
            for name, deployment in sorted(self.deployments.items())
            if (status := deployment.status) is not None
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.tick()
            except Exception:
                logger.exception("reconcile tick failed; retrying")
                self.console.log("[red]reconcile tick failed (see the log); retrying[/red]")
                delay = MAX_TICK_SECONDS
            self._stop.wait(delay)

    # --- one tick ----------------------------------------------------------------------------

    def tick(self) -> float:
        """One pass over every deployment; returns the seconds until the next pass is due."""
        self._refresh_candidates()
        exposition = self.serve.metrics_text()
        if exposition:
            self.recorder.ingest(exposition)
        health = self.serve.revision_health()
        delay = IDLE_TICK_SECONDS
        now = now_utc()
        for name in sorted(self.deployments):
            deployment = self.deployments[name]
            observations = Observations(
                revisions=health.get(name, {}),
                served_weights=None,
                offline=self._finished_offline(name),
                online=self._online.get(name),
            )
            result = reconcile(deployment, list(self.candidates.values()), observations, now)
            passed = result.status.last_decision
            if (
                result.status.phase == Phase.CANARY
                and passed is not None
                and passed != (deployment.status.last_decision if deployment.status else None)
            ):
                # A gate passed on the way (offline benchmark, a canary step); the final verdict is
                # recorded with the candidate's status.
                self.store.record_decision(name, passed, final=False)
            if result.status != deployment.status:
                deployment = deployment.model_copy(update={"status": result.status})
                self.deployments[name] = deployment
                self.store.write_object(deployment)
            for action in result.actions:
                if isinstance(action, ObserveCanary) and self._closes_step(name, action, now):
                    delay = BUSY_TICK_SECONDS  # the step's verdict waits for this sample only
                self._carry_out(deployment, action, now)
            if result.requeue_after is not None:
                delay = min(delay, max(BUSY_TICK_SECONDS, result.requeue_after))
        rendered = render_pool(self.pool, list(self.deployments.values()))
        self.serve.apply(rendered.config)
        self.serve.refresh()
        return min(delay, MAX_TICK_SECONDS)

    def _carry_out(self, deployment: ModelDeployment, action: object, now: datetime) -> None:
        name = deployment.metadata.name
        match action:
            case RunBenchmark():
                self._request_benchmark(deployment, action)
            case ObserveCanary():
                self._observe_canary(deployment, action, now)
            case EmitEvent():
                self._event(name, action)
            case UpdateCandidateStatus():
                self._update_candidate(name, action)
            case _:
                # DeployRevision, SetWeights, RemoveRevision: the pool's serve config is rendered from
                # the status just written and applied at the end of the tick.
                pass

    def _event(self, deployment: str, event: EmitEvent) -> None:
        style = "yellow" if event.type == "Warning" else "cyan"
        self.console.log(f"[{style}]{deployment}[/{style}] {event.reason}: {event.message}")
        self.store.record_event(deployment, event.type, event.reason, event.message, now_utc().isoformat())
        if self.on_event is not None:
            self.on_event(deployment, event)

    def _update_candidate(self, deployment: str, update: UpdateCandidateStatus) -> None:
        candidate = self.candidates.get(update.candidate)
        if candidate is None:
            return
        previous = candidate.status or ModelCandidateStatus()
        revision = revision_name(candidate.spec.deployment, candidate.spec.version)
        status = previous.model_copy(
            update={
                "phase": update.phase,
                "message": update.message,
                "decision": update.decision or previous.decision,
                "record": list(update.record) if update.record is not None else previous.record,
                "observed_generation": candidate.metadata.generation,
                "scores": self._scores.get(revision, previous.scores),
            }
        )
        candidate = candidate.model_copy(update={"status": status})
        self.candidates[update.candidate] = candidate
        self.store.write_object(candidate)
        # A candidate's outcome is final for its version: it is logged once, when it first ends (a
        # later update only completes the record shown with it).
        ended = update.phase in FINAL_CANDIDATE_PHASES and previous.phase not in FINAL_CANDIDATE_PHASES
        if update.decision is not None and ended:
            self.store.record_decision(deployment, update.decision, final=True)

    # --- candidates --------------------------------------------------------------------------

    def _refresh_candidates(self) -> None:
        """Pick up candidates from `baton candidate add` and files dropped into ModelSource directories."""
        for source in self.sources.values():
            interval = parse_duration(source.spec.poll_interval)
            if time.monotonic() - self._last_poll.get(source.metadata.name, -interval) < interval:
                continue
            self._last_poll[source.metadata.name] = time.monotonic()
            try:
                found = discover(source, self.candidates)
            except (OSError, ValueError) as error:
                self.console.log(f"[yellow]ModelSource {source.metadata.name}: {error}[/yellow]")
                continue
            for candidate in found:
                path = self.store.add_candidate(candidate)
                self.console.log(f"ModelSource {source.metadata.name}: new release -> {path.name}")
        folder = self.store.candidates_dir
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
            if path in self._rejected_files or path.stem in self.candidates:
                continue
            loaded, problems = load_file(path)
            problems += [problem for item in loaded for problem in self._candidate_problems(item)]
            if problems:
                self._rejected_files.add(path)
                for problem in problems:
                    self.console.log(f"[red]ignored: {problem}[/red]")
                continue
            for item in loaded:
                if isinstance(item.resource, ModelCandidate):
                    self.candidates[item.resource.metadata.name] = self.store.with_stored_status(
                        item.resource
                    )

    def _candidate_problems(self, item: LoadedResource) -> list[Problem]:
        resource = item.resource
        if not isinstance(resource, ModelCandidate):
            return [
                Problem(item.path, item.line_of([]), "only ModelCandidates are read from here", item.label)
            ]
        if resource.spec.deployment not in self.deployments:
            return [
                Problem(
                    item.path,
                    item.line_of(["spec", "deployment"]),
                    f"no ModelDeployment named {resource.spec.deployment!r}",
                    item.label,
                    "spec.deployment",
                )
            ]
        return []

    # --- gates -------------------------------------------------------------------------------

    def _request_benchmark(self, deployment: ModelDeployment, action: RunBenchmark) -> None:
        key = (deployment.metadata.name, action.candidate, action.benchmarks)
        if key in self._benchmarks.runs:
            return
        for stale in [k for k in self._benchmarks.runs if k[0] == key[0]]:
            self._benchmarks.runs.pop(stale).cancel()
        self._benchmarks.runs[key] = self._benchmarks.executor.submit(
            self._run_benchmarks, deployment, action
        )

    def _finished_offline(self, deployment: str) -> OfflineResult | None:
        for (name, _, _), future in self._benchmarks.runs.items():
            if name == deployment and future.done() and not future.cancelled():
                return future.result()
        return None

    def _run_benchmarks(self, deployment: ModelDeployment, action: RunBenchmark) -> OfflineResult:
        name = deployment.metadata.name
        spec: ModelDeploymentSpec = deployment.spec
        runner = BenchmarkRunner(
            self.serve.base_url,
            concurrency=2,
            console=self.console,
            show_progress=self.options.show_benchmark_progress,
        )
        try:
            results = {}
            for benchmark_name in action.benchmarks:
                benchmark = self.benchmark_specs[benchmark_name]
                if benchmark.spec.inline is None:
                    raise ValueError(f"Benchmark {benchmark_name}: local mode reads inline items only")
                items = tuple(benchmark.spec.inline)
                run = BenchmarkRun(
                    benchmark_name, name, action.champion, action.candidate, benchmark.spec, items
                )
                results[benchmark_name] = runner.query(run)
            outcome = offline_outcome(spec.analysis, results)
            self._scores[action.candidate] = benchmark_scores(results)
        except Exception as error:  # a failed evaluation is Inconclusive, never a pass
            logger.exception("benchmark of %s failed", action.candidate)
            outcome = evaluation_failed(",".join(action.benchmarks), f"benchmark run failed: {error}")
        return OfflineResult(candidate=action.candidate, benchmarks=action.benchmarks, outcome=outcome)

    def _closes_step(self, name: str, action: ObserveCanary, now: datetime) -> bool:
        """Whether a sample taken `now` is the first since the step's pause ended."""
        previous = self._online.get(name)
        return closes_step(parse_time(action.until), now, previous.observed_at if previous else None)

    def _observe_canary(self, deployment: ModelDeployment, action: ObserveCanary, now: datetime) -> None:
        """Judge the step's samples so far; `now` is when this tick read the pool's metrics."""
        name = deployment.metadata.name
        window = f"{action.candidate}@{action.step}@{action.since}"
        if self.recorder.windows.get(name) != window:
            # Requests from here on count for this step; the step's judgement starts empty.
            self.recorder.windows[name] = window
        champion = self.recorder.samples(name, action.champion, window)
        candidate = self.recorder.samples(name, action.candidate, window)
        external = {}
        if self.prometheus is not None:
            for metric in deployment.spec.analysis.metrics:
                if metric.provider == MetricProvider.PROMETHEUS and metric.query:
                    query = render_query(metric.query, deployment=name, revision=action.candidate)
                    external[metric.name] = self.prometheus.query(query)
        outcome = online_outcome(deployment.spec.analysis, champion, candidate, external)
        self._online[name] = OnlineResult(
            candidate=action.candidate,
            step=action.step,
            candidate_requests=candidate.requests,
            outcome=outcome,
            observed_at=now,
        )


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
