"""`baton pool-runner`: what KubeRay's controller does for a RayService, on a local Ray Serve.

In a real cluster KubeRay reads each RayService, runs a Ray cluster from `rayClusterConfig`,
deploys `serveConfigV2` onto it and writes the application health into the RayService status;
baton's operator only writes the RayService spec and reads that status. Where no KubeRay pods
can run (tests, laptops), this runner plays KubeRay's part for one RayService: it starts Ray
and Serve on loopback, applies every new `serveConfigV2` through the same declarative call the
Serve REST API uses, and writes `status` in KubeRay's shape:

    status:
      observedGeneration: <generation whose config is deployed and settled>
      serviceStatus: Running            # or "" while deploying / after a failure
      numServeEndpoints: 1
      activeServiceStatus:
        applicationStatuses:
          <app>: {status: RUNNING|DEPLOYING|DEPLOY_FAILED|UNHEALTHY, message, serveDeploymentStatuses}

`rayClusterConfig` is ignored: the local Ray is the cluster.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baton.k8s.kube import RAY_GROUP, RAY_SERVICES, RAY_VERSION, Kube, load_config
from baton.k8s.rayservice import serve_config

log = logging.getLogger("baton.pool_runner")
SETTLED = {"RUNNING", "DEPLOY_FAILED", "UNHEALTHY"}
# Serve may still report the previous config's state just after a deploy; a generation is only
# reported as served (the operator then moves traffic on) once this much time has passed.
SETTLE_GRACE_S = 1.0
RAY_START_ATTEMPTS = 3


def application_statuses() -> dict[str, dict[str, Any]]:
    """Serve's view of every application, in the shape KubeRay writes."""
    from ray import serve

    reported: dict[str, dict[str, Any]] = {}
    for name, application in serve.status().applications.items():
        reported[name] = {
            "status": _name(application.status),
            "message": (application.message or "")[:2000],
            "serveDeploymentStatuses": {
                deployment: {"status": _name(state.status), "message": (state.message or "")[:500]}
                for deployment, state in application.deployments.items()
            },
        }
    return reported


def _name(state: Any) -> str:
    """`RUNNING` for Serve's `ApplicationStatus.RUNNING` (an enum) as for a plain string."""
    return str(getattr(state, "value", state))


def ray_service_status(
    generation: int | None, statuses: dict[str, dict[str, Any]], wanted: list[str], *, grace_over: bool = True
) -> dict:
    """KubeRay-shaped status; `observedGeneration` only once every wanted app has settled."""
    settled = grace_over and all(statuses.get(name, {}).get("status") in SETTLED for name in wanted)
    running = settled and all(statuses.get(name, {}).get("status") == "RUNNING" for name in wanted)
    status: dict[str, Any] = {
        "serviceStatus": "Running" if running else "",
        "numServeEndpoints": 1 if running else 0,
        "activeServiceStatus": {
            "applicationStatuses": {name: statuses[name] for name in wanted if name in statuses}
        },
    }
    if settled:
        status["observedGeneration"] = generation
    return status


class PoolRunner:
    """Keeps one local Ray Serve in line with one RayService."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.applied_config: str | None = None
        self.applied_at = 0.0
        self.written_status: dict[str, Any] | None = None

    def step(self) -> None:
        """Apply the RayService's config if it changed, then report Serve's state."""
        from baton_serving.app import apply_serve_config

        body = self.kube.get(RAY_GROUP, RAY_VERSION, RAY_SERVICES, self.namespace, self.name)
        if body is None:
            return
        text = body.get("spec", {}).get("serveConfigV2") or ""
        config = serve_config(body)
        if text != self.applied_config:
            log.info("applying serveConfigV2 of generation %s", body["metadata"].get("generation"))
            apply_serve_config(config)
            self.applied_config = text
            self.applied_at = time.monotonic()
        wanted = [application["name"] for application in config.get("applications", [])]
        grace_over = time.monotonic() - self.applied_at >= SETTLE_GRACE_S
        status = ray_service_status(
            body["metadata"].get("generation"), application_statuses(), wanted, grace_over=grace_over
        )
        if status != self.written_status:
            self.kube.patch_owned_status(
                RAY_GROUP, RAY_VERSION, RAY_SERVICES, self.namespace, self.name, status
            )
            self.written_status = status


def run_pool_runner(
    namespace: str,
    name: str,
    *,
    http_port: int,
    num_cpus: int,
    url_file: Path | None = None,
    poll_s: float = 0.5,
) -> None:
    """Start Ray and Serve on loopback and follow the RayService until interrupted.

    `http_port` 0 picks a free port once Ray runs (Ray's own processes take random ports while
    starting, so a port chosen before could be gone); the URL goes to the log and to `url_file`.
    """
    import ray
    from ray import serve

    load_config()
    for attempt in range(1, RAY_START_ATTEMPTS + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
            break
        except Exception:  # Ray gives its raylet a fixed 30 s; a busy 2-core machine can miss it
            log.exception("starting Ray failed (attempt %d of %d)", attempt, RAY_START_ATTEMPTS)
            ray.shutdown()
            if attempt == RAY_START_ATTEMPTS:
                raise
    if http_port == 0:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": http_port})
    if url_file is not None:
        url_file.write_text(f"http://127.0.0.1:{http_port}")
    runner = PoolRunner(Kube(), namespace, name)
    log.info("pool runner for rayservices/%s/%s serving on 127.0.0.1:%d", namespace, name, http_port)
    while True:
        try:
            runner.step()
        except Exception:
            log.exception("pool runner step failed at %s; retrying", datetime.now(UTC).isoformat())
        time.sleep(poll_s)
