"""The API types accept the shipped examples, refuse bad input with a field path, and match the CRDs."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from baton.api import KINDS, ModelDeployment, parse_resource
from baton.api.common import Rules, api_field_path
from baton.api.crd import render_all
from baton.api.deployment import AnalysisSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def example_documents():
    for path in sorted((ROOT / "manifests" / "examples").rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path.name, document


def test_every_example_parses():
    kinds = {parse_resource(document).kind for _, document in example_documents()}
    assert {"ModelPool", "ModelDeployment", "ModelCandidate"} <= kinds


def test_committed_crds_match_the_types():
    rendered = render_all()
    assert sorted(rendered) == sorted(p.name for p in (ROOT / "manifests" / "crds").glob("*.yaml"))
    for name, text in rendered.items():
        assert (ROOT / "manifests" / "crds" / name).read_text() == text, f"{name} is stale: run `baton crds`"


def test_round_trip_through_the_wire_format():
    _, document = next((n, d) for n, d in example_documents() if d["kind"] == "ModelDeployment")
    parsed = ModelDeployment.model_validate(document)
    assert ModelDeployment.model_validate(parsed.to_wire()) == parsed
    assert parsed.to_wire()["spec"]["rollout"]["stickySessionHeader"] == "X-Baton-Session"


def _deployment(**spec_changes):
    _, document = next((n, d) for n, d in example_documents() if d["kind"] == "ModelDeployment")
    document["spec"].update(spec_changes)
    return document


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"pool": "Not_A_Name"}, ("spec", "pool")),
        ({"unknownField": 1}, ("spec", "unknownField")),
        ({"engine": {"contextLength": "big"}}, ("spec", "engine", "contextLength")),
        ({"analysis": {"alpha": 0.9}}, ("spec", "analysis", "alpha")),
        ({"rollout": {"steps": [{"weight": 0}]}}, ("spec", "rollout", "steps", 0, "weight")),
    ],
)
def test_bad_input_names_the_field_path(change, path):
    with pytest.raises(ValidationError) as error:
        ModelDeployment.model_validate(_deployment(**change))
    assert any(e["loc"][: len(path)] == path for e in error.value.errors()), error.value


def test_every_kind_has_a_short_name_and_printer_columns():
    for cls in KINDS.values():
        assert cls.short_names and cls.printer_columns, cls.kind_name


def _medical(**spec) -> dict:
    base = {
        "domain": "medical",
        "pool": "cpu-small",
        "model": {
            "version": "v1",
            "artifact": {"uri": "/m/v1.gguf", "digest": "sha256:" + "a" * 64, "quantization": "Q8_0"},
        },
        "analysis": {"benchmarks": [{"name": "medical-qa"}]},
    }
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": base | spec,
    }


@pytest.mark.parametrize(
    ("spec", "where", "says"),
    [
        ({"analysis": {}}, "spec.analysis.ungated", "no gate configured"),
        (
            {"analysis": {"ungated": True, "benchmarks": [{"name": "b"}]}},
            "spec.analysis.ungated",
            "contradicts",
        ),
        (
            {"rollout": {"steps": [{"weight": 10}, {"weight": 100}]}},
            "spec.rollout.steps[1].weight",
            "less than or equal to 99",
        ),
        (
            {"rollout": {"steps": [{"weight": 50}, {"weight": 10}]}},
            "spec.rollout.steps",
            "strictly increasing",
        ),
        (
            {"analysis": {"mode": "nonInferiority", "benchmarks": [{"name": "b"}]}},
            "spec.analysis.margin",
            "needs margin",
        ),
        (
            {
                "analysis": {
                    "metrics": [{"name": "p99", "kind": "latency", "provider": "prometheus", "query": "q"}]
                }
            },
            "spec.analysis.metrics[0].maxValue",
            "needs maxValue",
        ),
    ],
)
def test_the_cross_field_rules_hold_in_python_as_in_the_crd(spec, where, says):
    with pytest.raises(ValidationError) as caught:
        parse_resource(_medical(**spec))
    (error,) = caught.value.errors()
    # Named as the API server names it (the rule's fieldPath below the model that declares it).
    assert api_field_path(error) == where and says in error["msg"]


def test_each_rule_is_declared_once_for_both_validators():
    extra = AnalysisSpec.model_config["json_schema_extra"]
    assert isinstance(extra, Rules)
    published = AnalysisSpec.model_json_schema()["x-kubernetes-validations"]
    assert [rule["rule"] for rule in published] == [rule.cel for rule in extra.rules]


def test_an_ungated_deployment_says_so():
    deployment = parse_resource(_medical(analysis={"ungated": True}))
    assert deployment.spec.analysis.ungated and not deployment.spec.analysis.benchmarks
