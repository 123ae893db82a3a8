"""Scorers: turn one model answer into a score in [0, 1] against the item's expected answer.

The Benchmark resource's `spec.scorer` (`baton.api.benchmark.Scorer`) is the input; a scorer is
compiled once per benchmark (regex and JSON Schema are checked up front, so a bad spec fails
before any model is called) and then applied as a pure function `(expected, output) -> score`.
Every user pattern runs in RE2 (`baton_serving.patterns`): model output must not freeze the operator.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from typing import Any

import jsonschema

from baton.api.benchmark import Scorer, ScorerType
from baton_serving.patterns import check_schema_patterns, compile_pattern, linear_validator

ScoreFunction = Callable[[str, str], float]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_TRAILING_PUNCTUATION = ".!?;:"


def compile_scorer(spec: Scorer) -> ScoreFunction:
    """Build the scoring function for a Benchmark's scorer spec; raises ValueError naming the bad field."""
    kind = ScorerType(spec.type)
    if kind == ScorerType.EXACT:
        return lambda expected, output: float(
            _normalize(expected, spec.case_sensitive) == _normalize(output, spec.case_sensitive)
        )
    if kind == ScorerType.REGEX:
        if spec.pattern is None:
            raise ValueError("scorer.pattern: a regex scorer needs pattern")
        pattern = compile_pattern(spec.pattern, "scorer.pattern")
        return lambda expected, output: float(pattern.search(output) is not None)
    if kind == ScorerType.NUMERIC:
        if spec.tolerance is None:
            raise ValueError("scorer.tolerance: a numeric scorer needs tolerance")
        tolerance = spec.tolerance
        return lambda expected, output: _numeric(expected, output, tolerance)
    if spec.json_schema is None:
        raise ValueError(f"scorer.jsonSchema: a {kind} scorer needs jsonSchema")
    validator = _validator(spec.json_schema)
    if kind == ScorerType.JSON_SCHEMA:
        return lambda expected, output: float(_valid_json(output, validator) is not None)
    fields = tuple(spec.fields)
    return lambda expected, output: _field_match(expected, output, validator, fields, spec.case_sensitive)


def score(spec: Scorer, expected: str, output: str) -> float:
    """Score one answer (compiles the scorer each call; use `compile_scorer` for a whole benchmark)."""
    return compile_scorer(spec)(expected, output)


def _normalize(text: str, case_sensitive: bool) -> str:
    """NFKC, collapsed whitespace, no trailing sentence punctuation, and case-folded unless asked not to."""
    collapsed = " ".join(unicodedata.normalize("NFKC", text).split()).rstrip(_TRAILING_PUNCTUATION).strip()
    return collapsed if case_sensitive else collapsed.casefold()


def _first_number(text: str) -> float | None:
    match = _NUMBER.search(text.replace(",", ""))
    return float(match.group()) if match else None


def _numeric(expected: str, output: str, tolerance: float) -> float:
    target = _first_number(expected)
    if target is None:
        raise ValueError(f"expected answer {expected!r} holds no number (numeric scorer)")
    answer = _first_number(output)
    return float(answer is not None and math.isfinite(answer) and abs(answer - target) <= tolerance)


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as error:
        path = "".join(f"[{part!r}]" for part in error.absolute_path)
        raise ValueError(f"scorer.jsonSchema{path}: invalid JSON Schema: {error.message}") from error
    check_schema_patterns(schema, "scorer.jsonSchema")
    return linear_validator(schema)


def _valid_json(output: str, validator: jsonschema.protocols.Validator) -> Any | None:
    """The parsed answer if it is JSON valid against the schema, else None."""
    try:
        document = json.loads(output.strip())
    except ValueError:
        return None
    return document if validator.is_valid(document) else None


def _field_match(
    expected: str,
    output: str,
    validator: jsonschema.protocols.Validator,
    fields: tuple[str, ...],
    case_sensitive: bool,
) -> float:
    """Share of fields equal to the expected document's; an answer that is not schema-valid scores 0."""
    try:
        reference = json.loads(expected)
    except ValueError as error:
        raise ValueError(f"expected answer is not JSON (fieldMatch scorer): {error}") from error
    if not isinstance(reference, dict):
        raise ValueError("expected answer must be a JSON object (fieldMatch scorer)")
    compared = fields or tuple(reference)
    if not compared:
        raise ValueError(
            "fieldMatch scorer: no fields to compare (set scorer.fields or give expected fields)"
        )
    document = _valid_json(output, validator)
    if not isinstance(document, dict):
        return 0.0
    matched = sum(
        field in document and _same_value(reference.get(field), document[field], case_sensitive)
        for field in compared
    )
    return matched / len(compared)


def _same_value(expected: Any, actual: Any, case_sensitive: bool) -> bool:
    if isinstance(expected, str) and isinstance(actual, str):
        return _normalize(expected, case_sensitive) == _normalize(actual, case_sensitive)
    if isinstance(expected, bool) or isinstance(actual, bool):  # JSON true is not the number 1
        return type(expected) is type(actual) and expected == actual
    return bool(expected == actual)
