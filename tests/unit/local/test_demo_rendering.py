"""The demo renders the shipped examples against built models, and checks decisions against ground truth."""

import pytest

from baton.api import Decision
from baton.demo import DEMO_STEPS, BuiltModel, ground_truth_mismatches, render_resources
from baton.local.loader import load_resources

pytestmark = pytest.mark.unit


def models(tmp_path):
    built = {}
    for domain in ("medical",):
        for version in ("v1", "v2"):
            path = tmp_path / f"{domain}-{version}.Q8_0.gguf"
            path.write_bytes(b"GGUF")
            built[(domain, version)] = BuiltModel(domain, version, path, "ab" * 32, 4)
    return built


def test_rendered_examples_load_with_real_paths_digests_and_a_release_directory(tmp_path):
    target = render_resources(
        tmp_path / "resources",
        models(tmp_path),
        ["medical"],
        releases=tmp_path / "releases",
        include_candidates=True,
        steps=DEMO_STEPS,
        benchmark_items=8,
    )
    resources = load_resources([target])
    medical = resources.deployments["medical"]
    assert medical.spec.model.artifact.uri == (tmp_path / "medical-v1.Q8_0.gguf").as_uri()
    assert medical.spec.model.artifact.digest == "sha256:" + "ab" * 32
    assert [step.weight for step in medical.spec.rollout.steps] == [50]
    assert all(metric.provider == "inProcess" for metric in medical.spec.analysis.metrics)
    assert resources.candidates["medical-v2"].spec.artifact.uri.endswith("medical-v2.Q8_0.gguf")
    assert resources.sources["medical-releases"].spec.directory.path == str(tmp_path / "releases" / "medical")
    assert len(resources.benchmarks["medical-extraction"].spec.inline) == 8
    assert set(resources.deployments) == {"medical"}, "other domains are left out"


def decision(candidate: str, verdict: str) -> Decision:
    return Decision(
        verdict=verdict, gate="offline", candidate=candidate, reason="R", time="2026-01-01T00:00:00Z"
    )


def test_ground_truth_needs_exactly_one_matching_decision_per_version():
    good = [("medical", decision("v2", "Promote")), ("medical", decision("v3", "Reject"))]
    assert ground_truth_mismatches(good, ["medical"]) == []
    wrong = [("medical", decision("v2", "Reject"))]
    assert ground_truth_mismatches(wrong, ["medical"]) == [
        "medical v2: Reject (R), expected Promote: ",
        "medical v3: 0 final decisions, expected 1",
    ]
