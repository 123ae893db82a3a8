"""`baton up`'s runtime against a real Ray Serve and real (untrained smoke) GGUF models.

One scenario, in the order a user meets it: the champion serves; a candidate whose bytes do not
match its digest is refused without touching the champion; a good candidate is canaried on live
traffic and promoted with no failed request; after a stop, a restart resumes from stored state.
"""

import shutil
import threading

import httpx
import pytest
import yaml

from baton.evidence.releases import candidate_for_file
from baton.local.runtime import LocalRuntime, RuntimeOptions
from baton.local.store import LocalStore
from tests.testbed.processes import free_ports

pytestmark = pytest.mark.integration


def resources(directory, champion, domain: str = "medical", **spec) -> None:
    """A pool and one deployment named after its domain, v1 = `champion`; `spec` replaces top-level
    fields of the deployment's spec (engine, rollout, analysis)."""
    pool = {"apiVersion": "baton.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": "cpu-small"}}
    deployment = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": domain},
        "spec": {
            "domain": domain,
            "pool": "cpu-small",
            "model": {
                "version": "v1",
                "artifact": {
                    "uri": champion.path.as_uri(),
                    "digest": champion.digest,
                    "quantization": champion.quantization,
                    "sizeBytes": champion.size_bytes,
                },
            },
            "engine": {"contextLength": 128, "maxOutputTokens": 16},
            "rollout": {"steps": [{"weight": 50, "pause": "2s", "minRequests": 3}]},
            "analysis": {"minSamples": 5, "metrics": [{"name": "error-rate", "kind": "errorRate"}]},
        }
        | spec,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{domain}.yaml").write_text(yaml.safe_dump_all([pool, deployment]))


class Clients:
    """A client thread calling the endpoint until stopped; records answering revisions and failures."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        self.base_url, self.headers, self.revisions, self.failures = base_url, headers, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        body = {"model": "medical", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60) as client:
            for index in range(2000):
                if self._stop.is_set():
                    return
                response = client.post(
                    "/v1/chat/completions", json=body, headers={"X-Baton-Session": f"s{index}"}
                )
                if response.status_code == 200:
                    self.revisions.append(response.headers["X-Baton-Revision"])
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")


def wait_for(runtime, predicate, timeout=240):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out; status: {runtime.deployments['medical'].status}"
        time.sleep(0.25)


@pytest.mark.timeout(900)
def test_serve_refuse_promote_and_resume(tmp_path):
    from baton_models import catalog

    champion = catalog.smoke("medical", "F16")
    better = catalog.smoke("medical", "Q8_0")
    resources(tmp_path / "resources", champion)
    store = LocalStore(tmp_path / "state")
    (port,) = free_ports(1)
    options = RuntimeOptions(paths=[tmp_path / "resources"], port=port, show_benchmark_progress=False)
    runtime = LocalRuntime.prepare(options, store)
    runtime.start()
    try:
        wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Serving")
        corrupt = tmp_path / "medical-v2.Q8_0.gguf"
        shutil.copyfile(better.path, corrupt)
        refused = candidate_for_file("medical", corrupt)
        with corrupt.open("r+b") as stream:  # flip a byte after pinning: the bytes no longer match
            stream.seek(-1, 2)
            last = stream.read(1)
            stream.seek(-1, 2)
            stream.write(bytes([last[0] ^ 0xFF]))
        store.add_candidate(refused)
        with Clients(runtime.serve.base_url, runtime.serve.keys.client_headers) as clients:
            wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Rejected")
        assert runtime.deployments["medical"].status.last_decision.reason == "ArtifactRefused"
        assert "digest mismatch" in runtime.deployments["medical"].status.last_decision.message
        assert clients.failures == [] and set(clients.revisions) == {"medical-v1"}

        store.add_candidate(candidate_for_file("medical", better.path, version="v3"))
        with Clients(runtime.serve.base_url, runtime.serve.keys.client_headers) as clients:
            wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Promoted")
            seen_promoted = len(clients.revisions)
            wait_for(runtime, lambda: len(clients.revisions) > seen_promoted + 20)
        status = runtime.deployments["medical"].status
        assert status.champion.version == "v3"
        assert status.history[0].verdict == "Promote"
        assert clients.failures == []
        assert {"medical-v1", "medical-v3"} <= set(clients.revisions)
        assert clients.revisions[-1] == "medical-v3"
    finally:
        runtime.stop()

    assert store.read_running() is None
    resumed = LocalRuntime.prepare(options, store)
    assert resumed.deployments["medical"].status.champion.version == "v3"
    assert resumed.candidates["medical-v3"].status.phase == "Promoted"
    resumed.start()
    try:
        wait_for(resumed, lambda: "medical-v3" in resumed.serve.revision_health().get("medical", {}))
        wait_for(resumed, lambda: resumed.serve.revision_health()["medical"]["medical-v3"].state == "Ready")
        response = httpx.post(
            f"{resumed.serve.base_url}/v1/chat/completions",
            json={"model": "medical", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            headers=resumed.serve.keys.client_headers,
            timeout=60,
        )
        assert response.status_code == 200
        assert response.headers["X-Baton-Revision"] == "medical-v3"
    finally:
        resumed.stop()
