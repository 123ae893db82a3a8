"""Scorers: each Benchmark scorer type on right, wrong and malformed answers."""

from __future__ import annotations

import json

import pytest

from baton.analysis.scorers import compile_scorer, score
from baton.api.benchmark import Scorer

pytestmark = pytest.mark.unit

SCHEMA = {
    "type": "object",
    "properties": {
        "material": {"type": "string"},
        "load_kn": {"type": "number"},
        "certified": {"type": "boolean"},
    },
    "required": ["material", "load_kn"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("expected", "output", "value"),
    [
        ("Hypertension", "  hypertension. ", 1.0),
        ("Hypertension", "hyper tension", 0.0),
        ("Torque   wrench", "torque wrench!", 1.0),
    ],
)
def test_exact_normalizes_whitespace_case_and_final_punctuation(
    expected: str, output: str, value: float
) -> None:
    assert score(Scorer(type="exact"), expected, output) == value


def test_exact_can_be_case_sensitive() -> None:
    assert score(Scorer(type="exact", case_sensitive=True), "NaCl", "nacl") == 0.0


def test_regex_searches_the_answer() -> None:
    scorer = compile_scorer(Scorer(type="regex", pattern=r"\bO\(n log n\)"))
    assert scorer("", "merge sort runs in O(n log n) time") == 1.0
    assert scorer("", "it is O(n^2)") == 0.0


def test_regex_spec_error_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"pattern\n.*not a linear-time"):
        Scorer(type="regex", pattern="(unclosed")
    # A document the model did not validate (an old status, a hand-made spec) is refused when compiled.
    with pytest.raises(ValueError, match=r"scorer\.pattern"):
        compile_scorer(Scorer.model_construct(type="regex", pattern="(unclosed"))


# Python's `re` takes minutes on these (exponential backtracking); RE2 answers in microseconds.
CATASTROPHIC = [(r"(a+)+$", "a" * 40 + "b"), (r"^(\w+\s?)*$", "word " * 30 + "!")]


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("pattern", "answer"), CATASTROPHIC)
def test_regex_scorer_runs_a_catastrophic_pattern_in_linear_time(pattern: str, answer: str) -> None:
    assert compile_scorer(Scorer(type="regex", pattern=pattern))("", answer) == 0.0


@pytest.mark.timeout(5)
@pytest.mark.parametrize(("pattern", "answer"), CATASTROPHIC)
def test_schema_patterns_run_in_linear_time(pattern: str, answer: str) -> None:
    schema = {
        "type": "object",
        "properties": {"id": {"type": "string", "pattern": pattern}},
        "patternProperties": {pattern: {"type": "integer"}},
        "additionalProperties": False,
    }
    scorer = compile_scorer(Scorer(type="jsonSchema", json_schema=schema))
    assert scorer("", json.dumps({"id": answer})) == 0.0  # the value misses its pattern
    assert scorer("", json.dumps({answer: 1})) == 0.0  # the key matches no pattern: not allowed
    assert scorer("", json.dumps({"aaa": 1})) == 1.0  # the key matches the pattern property


@pytest.mark.parametrize(
    ("pattern", "where"),
    [
        (r"(a)\1", "backreference"),
        (r"(?=a)b", "lookahead"),
        (r"(?<!a)b", "lookbehind"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_their_path(pattern: str, where: str) -> None:
    with pytest.raises(ValueError, match=r"pattern\n.*not a linear-time \(RE2\)") as refused:
        Scorer(type="regex", pattern=pattern)
    assert pattern not in str(refused.value).split("input_value")[0], where
    nested = {"type": "object", "properties": {"id": {"type": "string", "pattern": pattern}}}
    with pytest.raises(ValueError, match=r"jsonSchema\.properties\.id\.pattern: not a linear-time"):
        Scorer(type="jsonSchema", json_schema=nested)
    keyed = {"type": "object", "patternProperties": {"^x": {}, pattern: {}}}
    with pytest.raises(ValueError, match=r"\.patternProperties\[1\]: not a linear-time"):
        Scorer(type="jsonSchema", json_schema=keyed)


def test_unevaluated_properties_beside_pattern_properties_is_refused() -> None:
    schema = {"type": "object", "patternProperties": {"^x": {}}, "unevaluatedProperties": False}
    with pytest.raises(ValueError, match="unevaluatedProperties beside patternProperties"):
        Scorer(type="jsonSchema", json_schema=schema)


@pytest.mark.parametrize(
    ("output", "value"),
    [("The load is 12.4 kN", 1.0), ("about 12.7", 0.0), ("1,200.2 N", 0.0), ("no idea", 0.0), ("-3e1", 0.0)],
)
def test_numeric_compares_the_first_number_within_tolerance(output: str, value: float) -> None:
    assert score(Scorer(type="numeric", tolerance=0.15), "12.5", output) == value


def test_numeric_reads_thousands_separators() -> None:
    assert score(Scorer(type="numeric", tolerance=0.5), "1200", "1,200 kg") == 1.0


def test_numeric_refuses_an_expected_answer_without_a_number() -> None:
    with pytest.raises(ValueError, match="holds no number"):
        score(Scorer(type="numeric", tolerance=1), "many", "3")


def test_json_schema_validity() -> None:
    scorer = compile_scorer(Scorer(type="jsonSchema", json_schema=SCHEMA))
    assert scorer("", json.dumps({"material": "steel", "load_kn": 4})) == 1.0
    assert scorer("", json.dumps({"material": "steel"})) == 0.0  # required field missing
    assert scorer("", '{"material": "steel", "load_kn": 4') == 0.0  # truncated JSON
    assert scorer("", "steel, 4 kN") == 0.0


def test_invalid_json_schema_is_refused_with_its_path() -> None:
    with pytest.raises(ValueError, match=r"scorer\.jsonSchema.*invalid JSON Schema"):
        compile_scorer(
            Scorer(type="jsonSchema", json_schema={"type": "object", "properties": {"a": {"type": 5}}})
        )


def test_field_match_is_the_share_of_matching_fields() -> None:
    scorer = compile_scorer(
        Scorer(type="fieldMatch", json_schema=SCHEMA, fields=["material", "load_kn", "certified"])
    )
    expected = json.dumps({"material": "Steel", "load_kn": 4, "certified": True})
    assert scorer(expected, json.dumps({"material": "steel", "load_kn": 4.0, "certified": True})) == 1.0
    assert scorer(
        expected, json.dumps({"material": "steel", "load_kn": 5, "certified": True})
    ) == pytest.approx(2 / 3)
    assert (
        scorer(expected, json.dumps({"material": "steel", "load_kn": 4, "certified": 1})) == 0.0
    )  # schema-invalid
    assert scorer(expected, "not json") == 0.0


def test_field_match_without_fields_compares_every_expected_field() -> None:
    scorer = compile_scorer(Scorer(type="fieldMatch", json_schema=SCHEMA))
    expected = json.dumps({"material": "oak", "load_kn": 2})
    assert scorer(expected, json.dumps({"material": "oak", "load_kn": 3})) == 0.5


def test_field_match_refuses_an_expected_answer_that_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        score(Scorer(type="fieldMatch", json_schema=SCHEMA), "[1, 2]", "{}")
