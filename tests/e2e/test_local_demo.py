"""The demo, end to end: real models, real Ray Serve, real traffic; every decision matches ground truth.

Runs `baton demo` as a user would (a subprocess) and reads the report it writes: v2 of every
domain promoted, v3 rejected, and not one client request failed while weights moved.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.testbed.processes import free_ports

pytestmark = pytest.mark.e2e

DOMAINS = ("medical", "construction", "aerospace", "software")


@pytest.mark.timeout(1800)
def test_demo_promotes_every_v2_and_rejects_every_v3_without_a_failed_request(tmp_path):
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
    verdicts = {(d["deployment"], d["candidate"]): d["verdict"] for d in report["decisions"]}
    expected = {(domain, "v2"): "Promote" for domain in DOMAINS} | {
        (domain, "v3"): "Reject" for domain in DOMAINS
    }
    assert verdicts == expected, report["mismatches"]
    assert len(report["decisions"]) == len(expected), "one final decision per offered version"
    promotions = [d for d in report["decisions"] if d["verdict"] == "Promote"]
    assert all(d["evidence"] for d in promotions), "every promotion carries its evidence"
    offline_passes = {
        d["deployment"] for d in report["gatesPassed"] if d["gate"] == "offline" and d["candidate"] == "v2"
    }
    assert offline_passes == set(DOMAINS), "every v2 passed the paired benchmark before its canary"
    for rejection in (d for d in report["decisions"] if d["candidate"] == "v3"):
        assert rejection["gate"] == "offline" and rejection["evidence"][0]["effect"] < 0, rejection
    for path in sorted((state / "objects" / "ModelCandidate").glob("*.json")):
        scores = json.loads(path.read_text())["status"]["scores"]  # the evidence beside the decision
        assert scores and all(score["items"] > 0 for score in scores), (path.name, scores)
        better = path.stem.endswith("v2")
        assert any((score["candidate"] > score["champion"]) == better for score in scores), path.name
    traffic = report["traffic"]
    assert traffic["failures"] == []
    answered_by = {(a["deployment"], a["revision"]) for a in traffic["answered"]}
    assert {(domain, f"{domain}-v2") for domain in DOMAINS} <= answered_by, (
        "clients were served by v2 after promotion"
    )
    assert traffic["total"] > 100
    assert completed.returncode == 0, completed.stdout[-4000:]
