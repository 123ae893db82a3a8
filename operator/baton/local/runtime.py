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
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from baton.api import Benchmark, ModelCandidate, ModelDeployment, ModelPool
from baton.api.deployment import Phase
from baton.evidence.benchmarks import BenchmarkOutcome, BenchmarkSettings, run_benchmarks
from baton.evidence.candidates import apply_candidate_update, record_scores
from baton.evidence.ports import EventType, Involved
from baton.evidence.providers.benchmark import PROGRESS_EVERY_S
from baton.evidence.samples import CanarySampler, Counts, parse_exposition
from baton.evidence.sources import SourcePoller
from baton.local.dataplane import LocalKeys, LocalServe
from baton.local.loader import (
    LoadedResource,
    Problem,
    ResourceLoadError,
    ResourceSet,
    load_file,
    load_resources,
)
from baton.local.store import LocalStore, LoopStore
from baton.rollout import (
    EmitEvent,
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RunBenchmark,
    UpdateCandidateStatus,
    closes_step,
    parse_time,
    reconcile,
)
from baton.rollout.render import render_pool
from baton_serving.artifacts import ArtifactError, fetch_verified
from baton_serving.config import FetchPolicy

logger = logging.getLogger("baton.local")

IDLE_TICK_SECONDS = 1.0
BUSY_TICK_SECONDS = 0.05
MAX_TICK_SECONDS = 2.0


def laptop_fetch_policy() -> FetchPolicy:
    """What `baton up` may read unless told otherwise: https URLs of public hosts, and local files
    under the home, temporary and baton cache directories (the user's own, on a laptop; not the
    working directory, which may be `/`)."""
    cache = os.environ.get("BATON_CACHE")
    roots = [Path.home(), Path(tempfile.gettempdir()), *([Path(cache)] if cache else [])]
    return FetchPolicy(local_roots=[str(root) for root in roots])


@dataclass(frozen=True)
class RuntimeOptions:
    """How `baton up` runs; the CLI and the demo build one."""

    paths: list[Path]
    port: int = 8000
    prometheus_url: str | None = None
    fresh: bool = False
    show_benchmark_progress: bool = True
    fetch: FetchPolicy = field(default_factory=laptop_fetch_policy)
    # False: `--no-auth`, no API key on the loopback endpoint.
    auth: bool = True


@dataclass
class _Benchmarks:
    """The one running or finished benchmark per (deployment, candidate revision, benchmarks).

    Deployments benchmark at the same time, one thread each, as the operator runs one task per
    deployment: a domain's candidate does not wait for another domain's benchmark to end.
    """

    executor: ThreadPoolExecutor
    runs: dict[tuple[str, str, tuple[str, ...]], Future[BenchmarkOutcome]] = field(default_factory=dict)
    scored: set[tuple[str, str, tuple[str, ...]]] = field(default_factory=set)


def preflight_problems(resources: ResourceSet, fetch: FetchPolicy) -> list[Problem]:
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
            fetch_verified(artifact.uri, artifact.digest, fetch)
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
        self.deployments: dict[str, ModelDeployment] = {
            name: store.with_stored_status(deployment) for name, deployment in resources.deployments.items()
        }
        self.candidates: dict[str, ModelCandidate] = {
            name: store.with_stored_status(candidate) for name, candidate in resources.candidates.items()
        }
        self.sources = {name: store.with_stored_status(source) for name, source in resources.sources.items()}
        self._rejected_files: set[Path] = set()
        # (deployment, candidate version) -> the champion version its rollout compared with.
        self._compared_with: dict[tuple[str, str], str] = {}
        self.evidence_store = LoopStore(
            store,
            self.candidates,
            self.sources,
            self._evidence_event,
            lambda deployment, version: self._compared_with.get((deployment, version)),
        )
        self._pollers = {name: SourcePoller(self.evidence_store, options.fetch) for name in self.sources}
        self._next_poll: dict[str, float] = {}
        keys = LocalKeys.create(store.keys_dir) if options.auth else LocalKeys.disabled()
        self.serve = LocalServe(options.port, keys, store.state_dir / "logs" / "ray.log")
        self.sampler = CanarySampler(self.evidence_store, options.prometheus_url)
        self._benchmarks = _Benchmarks(
            ThreadPoolExecutor(max_workers=max(1, len(self.deployments)), thread_name_prefix="benchmark")
        )
        self._online: dict[str, OnlineResult] = {}
        self._said: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.serve.base_url}/v1"

    def how_to_authenticate(self) -> str:
        """Where the client key is (the key itself is never printed or logged)."""
        key_file = self.serve.keys.client_key_file
        if key_file is None:
            return "authentication is off (--no-auth): anyone who reaches 127.0.0.1 may call"
        return (
            f"API key: the `key` field of {key_file}; send it as `Authorization: Bearer <key>` "
            f"(e.g. OPENAI_API_KEY=$(jq -r .key {key_file}))"
        )

    # --- set-up ----------------------------------------------------------------------------

    @classmethod
    def prepare(
        cls, options: RuntimeOptions, store: LocalStore, console: Console | None = None
    ) -> LocalRuntime:
        """Load and check the input; raises `ResourceLoadError` (nothing started) when it has problems."""
        if console is None:
            from baton.local.view import make_console

            console = make_console(stderr=True)
        if options.fresh and store.state_dir.exists():
            for part in ("objects", "candidates", "decisions.jsonl", "events.jsonl"):
                target = store.state_dir / part
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
        paths = list(options.paths)
        if store.candidates_dir.is_dir() and any(store.candidates_dir.iterdir()):
            paths.append(store.candidates_dir)
        resources = load_resources(paths)
        problems = preflight_problems(resources, options.fetch)
        if problems:
            raise ResourceLoadError(problems)
        return cls(options, store, resources, console)

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start Ray Serve, serve every champion, then run the loop in a background thread."""
        self.console.log(
            f"starting Ray Serve on {self.serve.base_url} (pool {self.pool.metadata.name}; "
            f"Ray's own log: {self.serve.log_path})"
        )
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
        from baton.local.view import deployments_table, table_width

        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        try:
            self.start()
            self.console.log(
                f"serving {', '.join(sorted(self.deployments))} at {self.endpoint}; "
                f"state in {self.store.state_dir}; Ctrl-C stops"
            )
            self.console.log(self.how_to_authenticate())
            shown = None
            while not self._stop.is_set():
                current = self._summary()
                if current != shown:
                    self.console.print(
                        deployments_table(self.deployments.values(), width=table_width(self.console))
                    )
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
        health = self.serve.revision_health()
        delay = IDLE_TICK_SECONDS
        now = now_utc()
        scrape = _Scrape(self.serve.ingress.metrics_text)
        for name in sorted(self.deployments):
            deployment = self.deployments[name]
            observations = Observations(
                revisions=health.get(name, {}),
                served_weights=None,
                offline=self._finished_offline(deployment),
                online=self._online.get(name),
            )
            result = reconcile(deployment, list(self.candidates.values()), observations, now)
            if result.status.candidate is not None and result.status.champion is not None:
                self._compared_with.setdefault(
                    (name, result.status.candidate.version), result.status.champion.version
                )
            passed = result.status.last_decision
            if (
                result.status.phase == Phase.CANARY
                and passed is not None
                and passed != (deployment.status.last_decision if deployment.status else None)
            ):
                # A gate passed on the way (offline benchmark, a canary step); the final verdict is
                # recorded with the candidate's status.
                self.store.record_decision(
                    name,
                    passed,
                    champion=self._compared_with.get((name, passed.candidate)),
                    final=False,
                )
            if result.status != deployment.status:
                deployment = deployment.model_copy(update={"status": result.status})
                self.deployments[name] = deployment
                self.store.write_object(deployment)
            for action in result.actions:
                if isinstance(action, ObserveCanary) and self._closes_step(name, action, now):
                    delay = BUSY_TICK_SECONDS  # the step's verdict waits for this sample only
                self._carry_out(deployment, action, now, scrape)
            if result.requeue_after is not None:
                delay = min(delay, max(BUSY_TICK_SECONDS, result.requeue_after))
            self._say_canary_progress(deployment)
        rendered = render_pool(self.pool, list(self.deployments.values()), self.options.fetch)
        self.serve.apply(rendered.config)
        self.serve.refresh()
        return min(delay, MAX_TICK_SECONDS)

    def _say_canary_progress(self, deployment: ModelDeployment) -> None:
        """Every PROGRESS_EVERY_S of a canary step: how far its evidence is (a step waits for it)."""
        name, status = deployment.metadata.name, deployment.status
        online = self._online.get(name)
        if status is None or status.phase != Phase.CANARY or status.canary is None or online is None:
            return
        if (
            online.step != status.canary.step
            or time.monotonic() - self._said.get(name, 0.0) < PROGRESS_EVERY_S
        ):
            return
        self._said[name] = time.monotonic()
        self.console.log(
            f"{name} canary step {status.canary.step + 1}/{status.canary.steps} at {status.canary_weight}%: "
            f"{online.outcome.message}"
        )

    def _carry_out(self, deployment: ModelDeployment, action: object, now: datetime, scrape: _Scrape) -> None:
        name = deployment.metadata.name
        match action:
            case RunBenchmark():
                self._request_benchmark(deployment, action)
            case ObserveCanary():
                sample = self.sampler.sample(deployment, action, scrape, now)
                if sample.result is not None:
                    self._online[name] = sample.result
            case EmitEvent():
                self._event(name, action.type, action.reason, action.message)
            case UpdateCandidateStatus():
                apply_candidate_update(self.evidence_store, action)
            case _:
                # DeployRevision, SetWeights, RemoveRevision: the pool's serve config is rendered from
                # the status just written and applied at the end of the tick.
                pass

    def _event(self, deployment: str, type_: str, reason: str, message: str) -> None:
        style = "yellow" if type_ == "Warning" else "cyan"
        self.console.log(f"[{style}]{deployment}[/{style}] {reason}: {message}")
        self.store.record_event(deployment, type_, reason, message, now_utc().isoformat())

    def _evidence_event(self, involved: Involved, type_: EventType, reason: str, message: str) -> None:
        """An Event of the evidence layer, recorded under the deployment it concerns."""
        kind, name = involved
        deployment = name
        if kind == "ModelCandidate" and (candidate := self.candidates.get(name)) is not None:
            deployment = candidate.spec.deployment
        elif kind == "ModelSource" and name in self.sources:
            deployment = self.sources[name].spec.deployment
        self._event(
            deployment, type_, reason, f"{kind} {name}: {message}" if kind != "ModelDeployment" else message
        )

    # --- candidates --------------------------------------------------------------------------

    def _refresh_candidates(self) -> None:
        """Pick up candidates from `baton candidate add` and files dropped into ModelSource directories."""
        for name, poller in self._pollers.items():
            if time.monotonic() < self._next_poll.get(name, 0.0):
                continue
            poll = poller.poll(self.sources[name], now_utc())
            self._next_poll[name] = time.monotonic() + poll.next_in
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
            self._benchmarks.scored.discard(stale)
        settings = BenchmarkSettings(
            fetch=self.options.fetch,
            concurrency=2,
            console=self.console,
            show_progress=self.options.show_benchmark_progress,
        )
        self._benchmarks.runs[key] = self._benchmarks.executor.submit(
            run_benchmarks,
            self.serve.ingress,
            self.evidence_store,
            deployment,
            action,
            self.benchmark_specs,
            settings,
        )

    def _finished_offline(self, deployment: ModelDeployment) -> OfflineResult | None:
        """The finished benchmark run of the deployment, if any; its scores go on the candidate once."""
        name = deployment.metadata.name
        for key, future in self._benchmarks.runs.items():
            if key[0] == name and future.done() and not future.cancelled():
                outcome = future.result()
                candidate = deployment.status.candidate if deployment.status else None
                if key not in self._benchmarks.scored and candidate is not None and candidate.candidate:
                    self._benchmarks.scored.add(key)
                    record_scores(self.evidence_store, candidate.candidate, outcome.scores)
                return outcome.result
        return None

    def _closes_step(self, name: str, action: ObserveCanary, now: datetime) -> bool:
        """Whether a sample taken `now` is the first since the step's pause ended."""
        previous = self._online.get(name)
        return closes_step(parse_time(action.until), now, previous.observed_at if previous else None)


class _Scrape:
    """The pool's counters, scraped at most once per tick and only if a canary step asks."""

    def __init__(self, read: Callable[[], str]) -> None:
        self._read = read
        self._result: dict[str, Counts] | BaseException | None = None

    def __call__(self) -> dict[str, Counts]:
        if self._result is None:
            try:
                self._result = parse_exposition(self._read())
            except Exception as error:
                self._result = error
        if isinstance(self._result, BaseException):
            raise self._result
        return self._result


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
