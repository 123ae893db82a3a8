"""Regular expressions from users, run in linear time: scorer patterns and JSON-schema `pattern`s.

A Benchmark's regex scorer, a Benchmark's JSON Schema and a client's `response_format` schema
carry patterns that are matched against model output, which anyone who can send a prompt shapes.
Python's `re` backtracks: `(a+)+$` on forty `a`s and a `b` runs for minutes and holds the GIL, so
one such pattern would freeze every reconcile and the operator's lease renewer, or an ingress
replica. RE2 matches in time linear in the input and refuses what it cannot do that way
(backreferences, lookaround), so such a pattern is refused before anything runs, naming where it
is, and never meets Python's `re`.

jsonschema matches `pattern`, `patternProperties` and `additionalProperties` (which looks at the
`patternProperties` keys) with `re`; the validator here replaces those three keywords with RE2
ones. `unevaluatedProperties` beside `patternProperties` would still reach `re` inside jsonschema,
so that combination is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import re2
from jsonschema import ValidationError, validators
from jsonschema.protocols import Validator

# RE2's own default; a pattern whose automaton needs more is refused rather than run slowly.
_MAX_PROGRAM_BYTES = 8 << 20
_MAX_CACHED = 512


class PatternError(ValueError):
    """A pattern RE2 cannot run; the message names where it is and why, never the pattern."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print the refused pattern on stderr
    options.max_mem = _MAX_PROGRAM_BYTES
    return options


@functools.lru_cache(maxsize=_MAX_CACHED)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _options())


def compile_pattern(pattern: str, where: str) -> Any:
    """The RE2 program of `pattern`; raises PatternError naming `where` when RE2 cannot run it."""
    try:
        return _compiled(pattern)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args else "not a regular expression"
        # RE2's reason quotes the offending fragment, which is the user's own input: keep only the kind.
        kind = reason.split(":", 1)[0]
        raise PatternError(f"{where}: not a linear-time (RE2) regular expression: {kind}") from error


def search(pattern: str, text: str) -> bool:
    """Whether `pattern` (already accepted by `compile_pattern`) occurs anywhere in `text`."""
    return _compiled(pattern).search(text) is not None


def _schema_patterns(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(where, pattern) of every regex in a JSON Schema; where is a path like `.properties.id.pattern`."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            yield f"{path}.pattern", pattern
        properties = node.get("patternProperties")
        if isinstance(properties, dict):
            for index, key in enumerate(properties):
                yield f"{path}.patternProperties[{index}]", key
        if isinstance(properties, dict) and properties and "unevaluatedProperties" in node:
            raise PatternError(
                f"{path or 'the root'}: unevaluatedProperties beside patternProperties is not supported"
            )
        for key, child in node.items():
            yield from _schema_patterns(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _schema_patterns(child, f"{path}[{index}]")


def check_schema_patterns(schema: Any, where: str = "") -> None:
    """Raise PatternError unless every pattern in `schema` runs in RE2."""
    for path, pattern in _schema_patterns(schema, where):
        compile_pattern(pattern, path)


def _pattern(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not search(pattern, instance):
        yield ValidationError("does not match the schema's pattern")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Validator, additional: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        key for key in instance if key not in named and not any(search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"{len(extras)} additional properties are not allowed")


_LINEAR_KEYWORDS = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}


@functools.cache
def _linear_class(draft: type[Validator]) -> type[Validator]:
    return validators.extend(draft, _LINEAR_KEYWORDS)


def linear_validator(schema: dict[str, Any]) -> Validator:
    """A jsonschema validator of `schema` whose patterns run in RE2 (call `check_schema_patterns` first)."""
    return _linear_class(validators.validator_for(schema))(schema)
