"""The demo renders the shipped examples against built models, and checks decisions against ground truth."""

import pytest

from baton.api import Decision
from baton.demo import (
    DEMO_STEPS,
    QUANTIZED_DOMAIN,
    QUANTIZED_OFFERS,
    BuiltModel,
    demo_models,
    demo_rounds,
    ground_truth_mismatches,
    render_resources,
)
from baton.local.loader import load_resources

pytestmark = pytest.mark.unit


def models(tmp_path, items=(("medical", "v1", "Q8_0"), ("medical", "v2", "Q8_0"))):
    built = {}
    for domain, version, quantization in items:
        path = tmp_path / f"{domain}-{version}.{quantization}.gguf"
        path.write_bytes(b"GGUF")
        built[(domain, version, quantization)] = BuiltModel(domain, version, path, "ab" * 32, 4, quantization)
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


def test_the_quantization_domain_serves_v2_and_offers_its_cheaper_quantizations_cheapest_first(tmp_path):
    domain = QUANTIZED_DOMAIN
    target = render_resources(
        tmp_path / "resources",
        models(tmp_path, demo_models([domain])),
        [domain],
        releases=tmp_path / "releases",
        include_candidates=False,
        steps=DEMO_STEPS,
        benchmark_items=8,
        quantized=domain,
    )
    resources = load_resources([target])
    spec = resources.deployments[domain].spec
    assert (spec.model.version, spec.model.artifact.quantization) == ("v2", "Q8_0")
    assert (spec.analysis.mode, spec.analysis.margin) == ("nonInferiority", 0.05)
    assert spec.analysis.require_gain.resource == "fileSize"
    assert [b.name for b in spec.analysis.benchmarks] == [f"{domain}-extraction", f"{domain}-routing"]
    source = resources.sources[f"{domain}-releases"].spec
    assert source.quantizations == list(QUANTIZED_OFFERS) == ["TQ2_0", "Q4_K_M"]
    assert [(offered, awaited) for offered, awaited in demo_rounds([domain])] == [
        ([(domain, "v2", "TQ2_0"), (domain, "v2", "Q4_K_M")], [(domain, "v2", "TQ2_0")]),
        ([], [(domain, "v2", "Q4_K_M")]),
    ]


def decision(candidate: str, verdict: str, quantization: str = "Q8_0") -> Decision:
    return Decision(
        verdict=verdict,
        gate="offline",
        candidate=candidate,
        quantization=quantization,
        reason="R",
        time="2026-01-01T00:00:00Z",
    )


def test_ground_truth_needs_exactly_one_matching_decision_per_version_and_quantization():
    good = [("medical", decision("v2", "Promote")), ("medical", decision("v3", "Reject"))]
    assert ground_truth_mismatches(good, ["medical"]) == []
    wrong = [("medical", decision("v2", "Reject")), ("medical", decision("v2", "Promote", "Q4_K_M"))]
    assert ground_truth_mismatches(wrong, ["medical"]) == [
        "medical v2 Q8_0: Reject (R), expected Promote: ",
        "medical v3 Q8_0: 0 final decisions, expected 1",
        "medical v2 Q4_K_M: unexpected decision Promote",
    ]
    quantized = [
        (QUANTIZED_DOMAIN, decision("v2", "Reject", "TQ2_0")),
        (QUANTIZED_DOMAIN, decision("v2", "Promote", "Q4_K_M")),
    ]
    assert ground_truth_mismatches(quantized, [QUANTIZED_DOMAIN]) == []
    assert ground_truth_mismatches(quantized[::-1][:1], [QUANTIZED_DOMAIN]) == [
        f"{QUANTIZED_DOMAIN} v2 TQ2_0: 0 final decisions, expected 1"
    ]
