"""Scale to zero end to end: `baton up`'s runtime, real Ray Serve, real llama-server, a deployment
with `engine.scaleToZeroAfter`; nothing stubbed and no hook in the code under test.

The idle champion's replica stops its llama-server (the process and its memory go, the Ray replica
stays); the next client request waits for the load and is answered; the wait, the load time and the
scale events are in the pool's `/metrics`, which promtool accepts. A candidate offered then keeps
both revisions loaded through its whole canary, idle or not, and once it is promoted the new
champion scales to zero in its turn.
"""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest

from baton.evidence.releases import candidate_for_file
from baton.local.runtime import LocalRuntime, RuntimeOptions
from baton.local.store import LocalStore
from tests.integration.local.test_local_runtime import Clients, resources, wait_for
from tests.testbed.processes import children_rss, free_ports

pytestmark = pytest.mark.e2e

IDLE = "2s"
V1, V2 = "medical-v1", "medical-v2"
CHAT = {"model": "medical", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def llama_servers(replica_pid: int) -> dict[int, int]:
    """pid -> resident bytes of the llama-server children of an engine replica's process."""
    return children_rss(replica_pid, "llama-server")


def sample(text: str, name: str, revision: str, **labels: str) -> float:
    """The value of one series of the exposition (0 when absent)."""
    wanted = [f'revision="{revision}"', *(f'{key}="{value}"' for key, value in labels.items())]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(label in line for label in wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(900)
def test_an_idle_champion_scales_to_zero_wakes_for_a_request_and_stays_loaded_during_a_canary(tmp_path):
    from baton_models import catalog

    champion, better = catalog.smoke("medical", "F16"), catalog.smoke("medical", "Q8_0")
    resources(
        tmp_path / "resources",
        champion,
        engine={"contextLength": 128, "maxOutputTokens": 16, "scaleToZeroAfter": IDLE},
    )
    store = LocalStore(tmp_path / "state")
    (port,) = free_ports(1)
    options = RuntimeOptions(paths=[tmp_path / "resources"], port=port, show_benchmark_progress=False)
    runtime = LocalRuntime.prepare(options, store)
    runtime.start()
    ingress, headers = runtime.serve.ingress, runtime.serve.keys.client_headers

    def status(revision: str) -> dict:
        return ((ingress.revision_statuses() or {}).get("medical") or {}).get(revision) or {}

    def running_in_ollama() -> set[str]:
        listing = httpx.get(f"{runtime.serve.base_url}/api/ps", headers=headers, timeout=30).json()
        return {model["name"] for model in listing["models"]}

    def chat() -> httpx.Response:
        return httpx.post(
            f"{runtime.serve.base_url}/v1/chat/completions", json=CHAT, headers=headers, timeout=120
        )

    try:
        wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Serving")
        # Idle past scaleToZeroAfter: unloaded, the replica's llama-server gone, the replica itself up.
        wait_for(runtime, lambda: status(V1).get("loaded") is False, timeout=60)
        replica = status(V1)["pid"]
        assert llama_servers(replica) == {}
        assert status(V1)["ready"] is True  # still routed to: it loads on demand
        assert running_in_ollama() == set()  # Ollama's `ps` lists loaded models only

        started = time.monotonic()
        response = chat()
        woke_s = time.monotonic() - started
        assert response.status_code == 200 and response.headers["X-Baton-Revision"] == V1
        servers = llama_servers(replica)
        assert len(servers) == 1 and next(iter(servers.values())) > 1 << 20, servers  # the model is back
        text = ingress.metrics_text()
        waited = sample(text, "baton_engine_load_wait_seconds_sum", V1)
        assert sample(text, "baton_engine_load_wait_seconds_count", V1) == 1 and 0 < waited < woke_s
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check
        # The probe reports the events and the load time within its 5 s period.
        wait_for(
            runtime,
            lambda: sample(ingress.metrics_text(), "baton_engine_scale_events", V1, event="load") == 1,
            timeout=30,
        )
        text = ingress.metrics_text()
        assert sample(text, "baton_engine_scale_events", V1, event="unload") >= 1
        assert sample(text, "baton_engine_load_seconds", V1) > 0

        # Idle again; Ollama's "load the model" (no prompt) loads it, and says how long that took.
        wait_for(runtime, lambda: status(V1).get("loaded") is False, timeout=60)
        load = httpx.post(
            f"{runtime.serve.base_url}/api/generate", json={"model": "medical"}, headers=headers, timeout=120
        ).json()
        assert load["done_reason"] == "load" and load["load_duration"] > 0
        assert running_in_ollama() == {"medical:latest"}  # listed as soon as it answered
        # Idle again, then a candidate: the canary keeps both revisions loaded, even with no traffic.
        wait_for(runtime, lambda: status(V1).get("loaded") is False, timeout=60)
        store.add_candidate(candidate_for_file("medical", better.path, version="v2"))
        wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Canary")
        wait_for(runtime, lambda: status(V1).get("loaded") is True, timeout=60)
        wait_for(runtime, lambda: status(V2).get("loaded") is True, timeout=60)
        unloads = status(V1)["scale_events"]["unload"]
        time.sleep(5 * 2)  # idle five times scaleToZeroAfter (two probe periods): nothing unloads
        assert runtime.deployments["medical"].status.phase == "Canary"
        assert status(V1)["loaded"] is True and status(V2)["loaded"] is True
        assert status(V1)["scale_events"]["unload"] == unloads and status(V2)["scale_events"]["unload"] == 0

        with Clients(runtime.serve.base_url, headers) as traffic:
            wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Promoted")
        assert traffic.failures == [] and {V1, V2} <= set(traffic.revisions)
        # The new champion serves alone: it scales to zero in its turn, and wakes for the next request.
        wait_for(runtime, lambda: status(V2).get("loaded") is False, timeout=90)
        response = chat()
        assert response.status_code == 200 and response.headers["X-Baton-Revision"] == V2
    finally:
        runtime.stop()
