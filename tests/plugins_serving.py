"""pytest fixtures for data-plane tests: one local Ray Serve per session, pools deployed for real.

`local_serve` starts Ray (2 CPUs, no dashboard, loopback) and Serve's HTTP proxy on a free port
once per session; Ray start-up is slow on a loaded 2-core machine, so every test shares it.
`local_serve.deploy(pool)` applies the same rendered config KubeRay would get and waits until every
revision has either loaded or been refused.

Authentication stays on, as in production: the session's pools read their keys from the fixture's
keys directory (deploy sets it, as the operator mounts a pool's Secret), and every test client
sends `AUTH`, the key of the tests' benchmark identity (it may pin revisions), or `CLIENT_AUTH`,
a plain client key scoped to every deployment.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from baton_serving.app import apply_serve_config, wait_until_running
from baton_serving.auth import ALL_DEPLOYMENTS, ApiKey, KeyRole
from baton_serving.config import (
    ENGINE_DEPLOYMENT,
    INGRESS_APP,
    SERVE_PROCESS_ENV,
    AuthConfig,
    FetchPolicy,
    PoolConfig,
    engine_app_name,
    render_serve_config,
)
from tests.policies import opted_in

DEPLOY_TIMEOUT_S = 300.0
# Fresh per session, never on disk outside the session's keys directory.
BENCHMARK_KEY = secrets.token_urlsafe(32)
CLIENT_KEY = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {BENCHMARK_KEY}"}
CLIENT_AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
# The tests send bursts of hundreds of requests: the tests' keys get quotas well above them.
TEST_QUOTAS = {"requests_per_minute": 1_000_000, "max_concurrent": 1_000}


def write_test_keys(directory) -> AuthConfig:
    """The keys directory every test pool reads: the benchmark key and a client key."""
    directory.mkdir(parents=True, exist_ok=True)
    for key_id, key, role in (
        ("tests", BENCHMARK_KEY, KeyRole.BENCHMARK),
        ("client", CLIENT_KEY, KeyRole.CLIENT),
    ):
        spec = ApiKey(key=key, deployments=[ALL_DEPLOYMENTS], role=role, **TEST_QUOTAS)
        (directory / key_id).write_text(spec.model_dump_json())
    return AuthConfig(keys_dir=str(directory), reload_interval_s=1.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalServe:
    """A running local Ray Serve; `url` is the OpenAI base (without `/v1`)."""

    url: str
    auth: AuthConfig
    fetch: FetchPolicy

    def deploy(self, pool: PoolConfig, timeout_s: float = DEPLOY_TIMEOUT_S) -> dict[str, Any]:
        """Apply `pool` with the session's keys and the tests' fetch policy (unless it names its
        own); return `/v1/baton/revisions` once every revision is ready or refused."""
        if pool.auth == AuthConfig():
            pool = pool.model_copy(update={"auth": self.auth})
        if pool.fetch == FetchPolicy():
            pool = pool.model_copy(update={"fetch": self.fetch})
        apply_serve_config(render_serve_config(pool))
        names = [INGRESS_APP] + [
            engine_app_name(d.name, r.name) for d in pool.deployments for r in d.revisions
        ]
        wait_until_running(names, timeout_s)
        expected = {d.name: {r.name for r in d.revisions} for d in pool.deployments}
        deadline = time.monotonic() + timeout_s
        while True:
            status = httpx.get(f"{self.url}/v1/baton/revisions", timeout=30).json()
            settled = {
                deployment: {name for name, state in revisions.items() if state["ready"] or state["error"]}
                for deployment, revisions in status.items()
            }
            if settled == expected:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"revisions not settled after {timeout_s:.0f} s: {status}")
            time.sleep(0.5)

    @staticmethod
    def engine_status(deployment: str, revision: str) -> dict[str, Any]:
        """The live status (pid, replica id) of one revision's engine replica, asked directly."""
        from ray import serve

        handle = serve.get_deployment_handle(
            ENGINE_DEPLOYMENT, app_name=engine_app_name(deployment, revision)
        )
        return handle.status.remote().result(timeout_s=60)


@pytest.fixture(scope="session")
def local_serve(tmp_path_factory) -> Iterator[LocalServe]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.update(SERVE_PROCESS_ENV)  # the pool's settings reach Serve's proxy as in a cluster
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield LocalServe(
            url=f"http://127.0.0.1:{port}",
            auth=write_test_keys(tmp_path_factory.mktemp("keys")),
            fetch=opted_in(tmp_path_factory.getbasetemp()),
        )
    finally:
        # The whole local cluster goes: no need for Serve's graceful drain of every replica.
        ray.shutdown()
