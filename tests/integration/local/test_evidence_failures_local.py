"""`baton up` records failed evidence as the operator does: the same Inconclusive, condition and Event.

The same failure kinds as tests/integration/operator/test_evidence_failures.py, injected for real
into the local runtime (real Ray Serve, real smoke GGUF models): Benchmark items that do not
validate, and a ModelSource directory that does not exist yet. Canary sampling against an ingress
that does not answer is the shared code in tests/unit/evidence/test_supervision.py.
"""

import hashlib
import json
import shutil

import pytest
import yaml

from baton.local.runtime import LocalRuntime, RuntimeOptions
from baton.local.store import LocalStore
from tests.integration.local.test_local_runtime import wait_for
from tests.testbed.processes import free_ports

pytestmark = pytest.mark.integration
SECRET = "PATIENT-NAME-7f3a"  # item content that no status, condition or Event may echo


@pytest.mark.timeout(900)
def test_failed_evidence_ends_recorded(tmp_path):
    from baton_models import catalog

    champion = catalog.smoke("medical", "F16")
    better = catalog.smoke("medical", "Q8_0")
    items = tmp_path / "items.jsonl"
    items.write_text(json.dumps({"id": 1, "prompt": SECRET}) + "\n")
    releases = tmp_path / "releases"
    documents = [
        {"apiVersion": "baton.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": "cpu-small"}},
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "Benchmark",
            "metadata": {"name": "medical-qa"},
            "spec": {
                "domain": "medical",
                "scorer": {"type": "exact"},
                "uri": {
                    "url": items.as_uri(),
                    "digest": "sha256:" + hashlib.sha256(items.read_bytes()).hexdigest(),
                },
            },
        },
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "medical"},
            "spec": {
                "domain": "medical",
                "pool": "cpu-small",
                "model": {
                    "version": "v1",
                    "artifact": {
                        "uri": champion.path.as_uri(),
                        "digest": champion.digest,
                        "quantization": "F16",
                        "sizeBytes": champion.size_bytes,
                    },
                },
                "engine": {"contextLength": 128, "maxOutputTokens": 16},
                "rollout": {"steps": [{"weight": 50, "pause": "2s", "minRequests": 3}]},
                "analysis": {"benchmarks": [{"name": "medical-qa"}]},
            },
        },
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelSource",
            "metadata": {"name": "medical-drops"},
            "spec": {"deployment": "medical", "directory": {"path": str(releases)}, "pollInterval": "1s"},
        },
    ]
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources" / "medical.yaml").write_text(yaml.safe_dump_all(documents))
    store = LocalStore(tmp_path / "state")
    (port,) = free_ports(1)
    options = RuntimeOptions(paths=[tmp_path / "resources"], port=port, show_benchmark_progress=False)
    runtime = LocalRuntime.prepare(options, store)
    runtime.start()

    def ready() -> dict:
        status = store.read_status("ModelSource", "medical-drops") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})

    try:
        wait_for(runtime, lambda: runtime.deployments["medical"].status.phase == "Serving")
        wait_for(runtime, lambda: ready().get("status") == "False")
        assert ready()["reason"] == "PollFailed" and "FileNotFoundError" in ready()["message"]

        releases.mkdir()
        shutil.copyfile(better.path, releases / "medical-v2.Q8_0.gguf")
        wait_for(runtime, lambda: "medical-v2" in runtime.candidates)
        wait_for(
            runtime,
            lambda: (
                (status := runtime.candidates["medical-v2"].status) is not None
                and status.decision is not None
            ),
        )
        decision = runtime.candidates["medical-v2"].status.decision
        assert decision.verdict == "Inconclusive" and "ValidationError" in decision.message
        assert ready()["status"] == "True"
    finally:
        runtime.stop()

    events = [json.loads(line) for line in (store.state_dir / "events.jsonl").read_text().splitlines()]
    failed = [event for event in events if event["reason"] == "EvidenceTaskFailed"]
    assert any("ValidationError" in event["message"] for event in failed)
    assert any("FileNotFoundError" in event["message"] for event in failed)
    everything = "".join(path.read_text() for path in store.state_dir.rglob("*") if path.is_file())
    assert SECRET not in everything
