"""A revision with `autoscaling` gains engine replicas under load and gives them back when it stops.

Real Ray Serve, real llama-server replicas: the rendered `autoscaling_config` is what Serve's
controller acts on, and the count stays within the revision's bounds the whole time.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from ray import serve

from baton_serving.config import ENGINE_DEPLOYMENT, PoolConfig, engine_app_name
from tests.plugins_serving import AUTH

pytestmark = pytest.mark.integration

MIN_REPLICAS, MAX_REPLICAS = 1, 2
SCALE_TIMEOUT_S = 120.0


def running_replicas() -> int:
    app = serve.status().applications[engine_app_name("medical", "v1")]
    return app.deployments[ENGINE_DEPLOYMENT].replica_states.get("RUNNING", 0)


def wait_for(replicas: int, seen: list[int]) -> float:
    """Seconds until Serve runs `replicas` engine replicas; every count observed goes into `seen`."""
    started = time.monotonic()
    while time.monotonic() - started < SCALE_TIMEOUT_S:
        seen.append(running_replicas())
        if seen[-1] == replicas:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"not {replicas} replicas after {SCALE_TIMEOUT_S:.0f} s: last {seen[-5:]}")


def test_replicas_rise_under_load_and_fall_back_within_bounds(local_serve, model_artifact) -> None:
    artifact = model_artifact("medical", "smoke", "Q4_K_M")
    revision = {
        "name": "v1",
        "artifact": {"uri": str(artifact.path), "digest": artifact.digest, "size_bytes": artifact.size_bytes},
        "context_length": 256,
        "max_ongoing_requests": 2,
        "num_replicas": MIN_REPLICAS,
        "resources": {"num_cpus": 0.05},
        "autoscaling": {
            "max_replicas": MAX_REPLICAS,
            "target_ongoing_requests": 1,
            "look_back_period_s": 2,
            "upscale_delay_s": 0,
            "downscale_delay_s": 2,
        },
    }
    config = PoolConfig.model_validate(
        {
            "pool": "scaling",
            "deployments": [{"name": "medical", "revisions": [revision], "route": {"weights": {"v1": 1}}}],
        }
    )
    local_serve.deploy(config)
    seen = [running_replicas()]
    assert seen == [MIN_REPLICAS]

    stop = threading.Event()
    failures: list[int] = []

    def client() -> None:
        body = {"model": "medical", "prompt": "The patient", "max_tokens": 200, "temperature": 0}
        with httpx.Client(base_url=local_serve.url, headers=AUTH, timeout=60) as http:
            while not stop.is_set():
                response = http.post("/v1/completions", json=body)
                if response.status_code != 200:
                    failures.append(response.status_code)

    clients = [threading.Thread(target=client) for _ in range(6)]  # 3x what one replica's slots take
    for thread in clients:
        thread.start()
    try:
        wait_for(MAX_REPLICAS, seen)
        for _ in range(10):  # still loaded: it stays at the maximum, never past it
            time.sleep(0.5)
            seen.append(running_replicas())
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    wait_for(MIN_REPLICAS, seen)
    assert failures == []
    assert set(seen) <= set(range(MIN_REPLICAS, MAX_REPLICAS + 1)), seen
