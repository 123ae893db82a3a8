"""The local data plane: a real Ray Serve on 127.0.0.1, driven the way KubeRay drives it in a cluster.

All of Ray listens on loopback only and asks for a token (`ray_on_loopback`): a laptop's Ray must not
run code sent to it from the network it is on.

The rollout core renders a `PoolConfig`; this module applies it through `baton_serving`'s own
declarative path (`render_serve_config` + `apply_serve_config`), reads revision health from the
ingress (`/v1/baton/revisions`) and the ingress's Prometheus exposition (`/metrics`) — the same
endpoints an operator and Prometheus read in a cluster.

A revision that leaves the rendered config keeps its engine, with no weight, for a drain period:
the ingress picks up new weights asynchronously, and a request routed by the old table must still
find its engine. Only then is the engine removed.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from baton.evidence.ingress import Ingress
from baton.rollout import RevisionHealth, RevisionState
from baton_serving.auth import KeyRole, ensure_key_file
from baton_serving.config import (
    SERVE_PROCESS_ENV,
    AuthConfig,
    DeploymentSpec,
    PoolConfig,
    RevisionSpec,
    RoutePolicy,
)

logger = logging.getLogger("baton.local")

LOOPBACK = "127.0.0.1"
_ONE_MACHINE_RAY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DRAIN_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 300.0
# The id of the key a person, the demo's traffic and any local client use, and of the operator's
# benchmark identity (the one whose revision pins are honoured).
CLIENT_KEY_ID = "local"
BENCHMARK_KEY_ID = "operator"
# One person's laptop: the quotas only keep a runaway script from starving the benchmarks.
LOCAL_QUOTAS = {"requests_per_minute": 100_000, "max_concurrent": 64}


class DataPlaneError(RuntimeError):
    """Ray Serve could not be started or did not accept the configuration."""


@dataclass(frozen=True)
class Draining:
    """A revision no longer rendered, kept without weight until `until` (monotonic seconds)."""

    deployment: str
    revision: RevisionSpec
    until: float


def with_draining(config: PoolConfig, draining: Mapping[tuple[str, str], Draining]) -> PoolConfig:
    """`config` plus the draining revisions, each at weight 0 (reachable, never chosen)."""
    if not draining:
        return config
    deployments: list[DeploymentSpec] = []
    for deployment in config.deployments:
        names = {revision.name for revision in deployment.revisions}
        extra = [
            drain.revision
            for (name, revision), drain in sorted(draining.items())
            if name == deployment.name and revision not in names
        ]
        if not extra:
            deployments.append(deployment)
            continue
        weights = dict(deployment.route.weights) | {revision.name: 0.0 for revision in extra}
        route = RoutePolicy(
            weights=weights, shadow=deployment.route.shadow, sticky_header=deployment.route.sticky_header
        )
        deployments.append(
            DeploymentSpec(name=deployment.name, revisions=[*deployment.revisions, *extra], route=route)
        )
    return config.model_copy(update={"deployments": deployments})


def removed_revisions(before: PoolConfig | None, after: PoolConfig) -> list[tuple[str, RevisionSpec]]:
    """Revisions of deployments still served that `after` no longer runs."""
    if before is None:
        return []
    kept = {
        (deployment.name, revision.name)
        for deployment in after.deployments
        for revision in deployment.revisions
    }
    served = {deployment.name for deployment in after.deployments}
    return [
        (deployment.name, revision)
        for deployment in before.deployments
        for revision in deployment.revisions
        if deployment.name in served and (deployment.name, revision.name) not in kept
    ]


def route_ray_logging(path: Path) -> None:
    """Ray's and Serve's own log lines in this process (Serve starting, applications ready, worker
    warnings) go to `path`: nothing in them is for the person watching `baton up` or the demo."""
    from ray import serve  # noqa: F401 (importing Serve installs its console handler, replaced here)

    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.serve"):
        ray_logger = logging.getLogger(name)
        ray_logger.handlers = [handler]
        ray_logger.propagate = False


@dataclass(frozen=True)
class LocalKeys:
    """The local pool's keys: where their files are, and the two `baton up` makes itself."""

    auth: AuthConfig
    client_key_file: Path | None = None
    client_key: str | None = None
    benchmark_key: str | None = None

    @classmethod
    def create(cls, directory: Path) -> LocalKeys:
        """The key files in `directory` (made once, kept across restarts)."""
        client = ensure_key_file(directory, CLIENT_KEY_ID, KeyRole.CLIENT, **LOCAL_QUOTAS)
        benchmark = ensure_key_file(directory, BENCHMARK_KEY_ID, KeyRole.BENCHMARK, **LOCAL_QUOTAS)
        return cls(AuthConfig(keys_dir=str(directory)), directory / CLIENT_KEY_ID, client, benchmark)

    @classmethod
    def disabled(cls) -> LocalKeys:
        """`--no-auth`: anyone who reaches 127.0.0.1 may call and pin."""
        return cls(AuthConfig(enabled=False))

    @property
    def client_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client_key}"} if self.client_key else {}


def ray_on_loopback() -> None:
    """Make the next local `ray.init` listen on 127.0.0.1 only, with token authentication.

    Call it before `ray.init(..., _node_ip_address=LOOPBACK)`.
    """
    # The GCS and raylet run whatever code they are sent: a local `ray.init` turns Ray's token
    # authentication on unless RAY_AUTH_MODE says otherwise (the test suites set `disabled`), and
    # this run's token is its own, in memory (Ray would otherwise keep one in ~/.ray).
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    # Ray binds every server (GCS, raylet, object manager, agents) to its node address, and on Linux
    # turns a loopback one into the machine's network address; what it does on macOS (one-machine
    # Ray, on loopback) is what a laptop needs. Ray reads the setting at import, so a Ray imported
    # before is told as well; its processes inherit the variable.
    os.environ[_ONE_MACHINE_RAY] = "0"
    import ray._private.ray_constants

    ray._private.ray_constants.ENABLE_RAY_CLUSTER = False


class LocalServe:
    """Ray (local, in this process) and Serve's HTTP proxy on 127.0.0.1:`port`.

    With a `log_path`, Ray's and Serve's own log lines go there instead of the console. Every pool
    it applies reads the keys of `keys`; its benchmarks send the benchmark key.
    """

    def __init__(self, port: int, keys: LocalKeys, log_path: Path | None = None) -> None:
        self.port = port
        self.keys = keys
        self.log_path = log_path
        self.base_url = f"http://{LOOPBACK}:{port}"
        self._applied: PoolConfig | None = None
        self._rendered: PoolConfig | None = None
        self._draining: dict[tuple[str, str], Draining] = {}
        self.ingress = Ingress(self.base_url, api_key=keys.benchmark_key)

    def start(self) -> None:
        import ray
        from ray import serve

        ray_on_loopback()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.update(SERVE_PROCESS_ENV)  # Serve's proxy and controller inherit it
        if self.log_path is not None:
            route_ray_logging(self.log_path)
        # ray.init replaces the SIGTERM handler with one that aborts the process; keep the caller's,
        # so SIGTERM stops `baton up` as cleanly as Ctrl-C does.
        on_sigterm = signal.getsignal(signal.SIGTERM)
        ray.init(
            address="local",
            _node_ip_address=LOOPBACK,
            num_cpus=max(4, os.cpu_count() or 2),
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            namespace="baton-local",
        )
        if threading.current_thread() is threading.main_thread() and on_sigterm is not None:
            signal.signal(signal.SIGTERM, on_sigterm)
        serve.start(http_options={"host": LOOPBACK, "port": self.port})

    def apply(self, config: PoolConfig) -> None:
        """Serve `config`; revisions it drops drain first. Returns once Serve accepted the config."""
        from baton_serving.app import apply_serve_config
        from baton_serving.config import render_serve_config

        now = time.monotonic()
        for deployment, revision in removed_revisions(self._rendered, config):
            self._draining[(deployment, revision.name)] = Draining(deployment, revision, now + DRAIN_SECONDS)
        self._draining = {key: drain for key, drain in self._draining.items() if drain.until > now}
        self._rendered = config
        effective = with_draining(config, self._draining).model_copy(update={"auth": self.keys.auth})
        if effective == self._applied:
            return
        apply_serve_config(render_serve_config(effective))
        self._applied = effective

    def refresh(self) -> None:
        """Re-apply when a drain period ended (the engine of a drained revision is then removed)."""
        if self._rendered is not None and any(
            drain.until <= time.monotonic() for drain in self._draining.values()
        ):
            self.apply(self._rendered)

    def wait_for_ingress(self, timeout_s: float = READY_TIMEOUT_SECONDS) -> None:
        from baton_serving.app import wait_until_running
        from baton_serving.config import INGRESS_APP

        wait_until_running([INGRESS_APP], timeout_s=timeout_s)

    def revision_health(self) -> dict[str, dict[str, RevisionHealth]]:
        """Per deployment and revision: Ready, Failed (with the refusal) or Loading."""
        reported = self.ingress.revision_statuses() or {}
        return {deployment: _health(revisions) for deployment, revisions in reported.items()}

    def stop(self) -> None:
        import ray
        from ray import serve

        self.ingress.close()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _health(revisions: Mapping[str, Mapping]) -> dict[str, RevisionHealth]:
    health = {}
    for name, status in revisions.items():
        if status.get("ready"):
            health[name] = RevisionHealth(RevisionState.READY)
        elif status.get("error"):
            health[name] = RevisionHealth(RevisionState.FAILED, str(status["error"]))
        else:
            health[name] = RevisionHealth(RevisionState.LOADING)
    return health
