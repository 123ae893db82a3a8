"""The API types accept the shipped examples, refuse bad input with a field path, and match the CRDs."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from baton.api import KINDS, ModelDeployment, parse_resource
from baton.api.crd import render_all

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
