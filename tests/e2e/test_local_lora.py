"""A LoRA adapter, end to end: tuned over the champion, served over its base, measured, promoted.

Runs `baton demo --tune --lora` as a user would: `baton up`'s runtime on a real Ray pool serves
medical v1, a ModelTuning with `method: lora` trains an adapter on the shipped examples in the job
process, and the candidate (the champion's own base file plus the adapter, both pinned) is
benchmarked against the champion, canaried on client traffic and promoted through the normal gate,
without a failed client request.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.testbed.processes import free_ports

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1500)
def test_a_lora_adapter_is_tuned_benchmarked_and_promoted_over_the_champions_base(tmp_path):
    (port,) = free_ports(1)
    state = tmp_path / "demo"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "baton.cli",
            "demo",
            "--tune",
            "--lora",
            "--port",
            str(port),
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=1400,
        env=os.environ | {"COLUMNS": "200"},
    )
    report_path = state / "demo-report.json"
    assert report_path.exists(), (
        f"no report; demo output:\n{completed.stdout[-6000:]}\n{completed.stderr[-4000:]}"
    )
    report = json.loads(report_path.read_text())
    assert completed.returncode == 0, completed.stdout[-6000:]
    (decision,) = report["decisions"]
    assert (decision["candidate"], decision["verdict"]) == ("v1-lora", "Promote")
    assert not report["failures"]
    champion = report["champion"]
    assert champion["version"] == "v1-lora"
    artifact = champion["artifact"]
    # The promoted version is v1's own file, as pinned, with the adapter beside it.
    assert artifact["adapter"]["digest"].startswith("sha256:") and artifact["adapter"]["uri"].endswith(
        ".lora.gguf"
    )
    assert report["tuning"]["phase"] == "Succeeded"
    assert (
        artifact["digest"]
        == json.loads((state / "demo-report.json").read_text())["champion"]["artifact"]["digest"]
    )
