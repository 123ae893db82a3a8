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
from tests.integration.local.test_local_runtime import resources, wait_for
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
    resources(tmp_path / "resources", champion)
    written = tmp_path / "resources" / "medical.yaml"
    pool, deployment = yaml.safe_load_all(written.read_text())
    deployment["spec"]["analysis"] = {"benchmarks": [{"name": "medical-qa"}]}
    benchmark = {
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
    }
    source = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelSource",
        "metadata": {"name": "medical-drops"},
        "spec": {"deployment": "medical", "directory": {"path": str(releases)}, "pollInterval": "1s"},
    }
    written.write_text(yaml.safe_dump_all([pool, deployment, benchmark, source]))
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
