"""The demo, end to end: real models, real Ray Serve, real traffic; every decision matches ground truth.

Runs `baton demo` as a user would (a subprocess) and reads the report it writes: v2 of three
domains promoted, v3 rejected; in the fourth, the champion's own v2 in post-training ternary
rejected and in Q4_K_M promoted on non-inferiority plus a smaller file; and not one client request
failed while weights moved.
"""

import json
import os
import subprocess
import sys

import pytest

from baton.demo import QUANTIZED_DOMAIN
from tests.testbed.processes import free_ports

pytestmark = pytest.mark.e2e

VERSIONED = ("medical", "construction", "software")


@pytest.mark.timeout(1800)
def test_demo_promotes_better_and_cheaper_rejects_worse_and_lossy_without_a_failed_request(tmp_path):
    (port,) = free_ports(1)
    state = tmp_path / "demo"
    completed = subprocess.run(
        [sys.executable, "-m", "baton.cli", "demo", "--port", str(port), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=1700,
        env=os.environ | {"COLUMNS": "200"},
    )
    report_path = state / "demo-report.json"
    assert report_path.exists(), (
        f"no report; demo output:\n{completed.stdout[-6000:]}\n{completed.stderr[-4000:]}"
    )
    report = json.loads(report_path.read_text())
    verdicts = {
        (d["deployment"], d["candidate"], d["quantization"]): d["verdict"] for d in report["decisions"]
    }
    expected = (
        {(domain, "v2", "Q8_0"): "Promote" for domain in VERSIONED}
        | {(domain, "v3", "Q8_0"): "Reject" for domain in VERSIONED}
        | {(QUANTIZED_DOMAIN, "v2", "TQ2_0"): "Reject", (QUANTIZED_DOMAIN, "v2", "Q4_K_M"): "Promote"}
    )
    assert verdicts == expected, report["mismatches"]
    assert len(report["decisions"]) == len(expected), "one final decision per offered version"
    promotions = [d for d in report["decisions"] if d["verdict"] == "Promote"]
    assert all(d["evidence"] for d in promotions), "every promotion carries its evidence"
    offline_passes = {
        (d["deployment"], d["candidate"], d["quantization"])
        for d in report["gatesPassed"]
        if d["gate"] == "offline" and d["verdict"] == "Promote"
    }
    assert offline_passes == {key for key, verdict in expected.items() if verdict == "Promote"}, (
        "every promoted candidate passed the paired benchmark before its canary"
    )
    for rejection in (d for d in report["decisions"] if d["verdict"] == "Reject"):
        assert rejection["gate"] == "offline" and rejection["evidence"][0]["effect"] < 0, rejection
    (cheaper,) = [
        d for d in report["gatesPassed"] if d["gate"] == "offline" and d["quantization"] == "Q4_K_M"
    ]
    tests = {evidence["test"]: evidence for evidence in cheaper["evidence"]}
    assert cheaper["reason"] == "BenchmarkNonInferior" and tests["gain"]["effect"] >= 0.3, cheaper
    for path in sorted((state / "objects" / "ModelCandidate").glob("*.json")):
        scores = json.loads(path.read_text())["status"]["scores"]  # the evidence beside the decision
        assert scores and all(score["items"] > 0 for score in scores), (path.name, scores)
        if path.stem.startswith(QUANTIZED_DOMAIN):
            lossy = path.stem.endswith("tq2-0")
            assert all((score["candidate"] < score["champion"]) == lossy for score in scores), (
                path.name,
                scores,
            )
            continue
        better = path.stem.endswith("v2")
        assert any((score["candidate"] > score["champion"]) == better for score in scores), path.name
    traffic = report["traffic"]
    assert traffic["failures"] == []
    answered_by = {(a["deployment"], a["revision"]) for a in traffic["answered"]}
    served_after = {(domain, f"{domain}-v2") for domain in VERSIONED} | {
        (QUANTIZED_DOMAIN, f"{QUANTIZED_DOMAIN}-v2-q4-k-m")
    }
    assert served_after <= answered_by, "clients were served by v2 (and the Q4_K_M one) after promotion"
    assert traffic["total"] > 100
    assert completed.returncode == 0, completed.stdout[-4000:]
