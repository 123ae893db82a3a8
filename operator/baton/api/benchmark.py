"""`Benchmark`: a domain's evaluation suite, the offline gate's ground truth.

Candidate and champion answer the same items; the scorer turns each answer into a per-item
score, and the analysis core compares the two score vectors with a paired test.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from baton.api.common import (
    DIGEST_PATTERN,
    DNS_LABEL_PATTERN,
    BatonModel,
    Condition,
    PrinterColumn,
    Resource,
    Rule,
    with_rules,
)
from baton_serving.patterns import check_schema_patterns, compile_pattern


class ScorerType(StrEnum):
    EXACT = "exact"
    REGEX = "regex"
    NUMERIC = "numeric"
    JSON_SCHEMA = "jsonSchema"
    FIELD_MATCH = "fieldMatch"


class Scorer(BatonModel):
    """How one answer is scored against the item's expected answer (score in [0, 1])."""

    model_config = with_rules(
        Rule(
            cel="self.type != 'regex' || has(self.pattern)",
            holds=lambda self: self.type != ScorerType.REGEX or self.pattern is not None,
            message="a regex scorer needs pattern",
            field_path=".pattern",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.type != 'numeric' || has(self.tolerance)",
            holds=lambda self: self.type != ScorerType.NUMERIC or self.tolerance is not None,
            message="a numeric scorer needs tolerance",
            field_path=".tolerance",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!(self.type in ['jsonSchema', 'fieldMatch']) || has(self.jsonSchema)",
            holds=lambda self: (
                self.type not in (ScorerType.JSON_SCHEMA, ScorerType.FIELD_MATCH)
                or self.json_schema is not None
            ),
            message="jsonSchema and fieldMatch scorers need jsonSchema",
            field_path=".jsonSchema",
            reason="FieldValueRequired",
        ),
    )

    type: ScorerType = Field(
        description=(
            "`exact`: normalized string equality; `regex`: the answer matches `pattern`; "
            "`numeric`: the first number in the answer is within `tolerance` of the expected "
            "number; `jsonSchema`: the answer is JSON valid against `jsonSchema`; "
            "`fieldMatch`: fraction of `fields` whose values equal the expected JSON."
        )
    )
    pattern: str | None = Field(default=None, min_length=1, description="Regular expression (regex scorer).")
    tolerance: float | None = Field(default=None, ge=0, description="Absolute tolerance (numeric scorer).")
    case_sensitive: bool = Field(default=False, description="Compare case-sensitively (exact scorer).")
    json_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema the answer must satisfy; also sent as `response_format` (structured tasks).",
    )
    fields: list[str] = Field(
        default_factory=list, max_length=64, description="Top-level fields compared by a fieldMatch scorer."
    )

    # CEL cannot run RE2, so a pattern RE2 refuses (backreferences, lookaround) is refused here:
    # by `baton validate`, the local shell, and the operator's status of the Benchmark.
    @field_validator("pattern")
    @classmethod
    def _linear_pattern(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compile_pattern(pattern, "pattern")
        return pattern

    @field_validator("json_schema")
    @classmethod
    def _linear_schema_patterns(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        check_schema_patterns(schema, "jsonSchema")
        return schema


class BenchmarkItem(BatonModel):
    """One prompt with its expected answer."""

    id: str = Field(min_length=1, max_length=128, description="Stable item identifier (pairs the two arms).")
    prompt: str = Field(min_length=1, description="The user message sent to the model.")
    expected: str = Field(description="Expected answer; for structured tasks a JSON document as a string.")
    group: str | None = Field(
        default=None,
        description="Cluster of related items (same source document): makes standard errors cluster-robust.",
    )


class ConfigMapItemsRef(BatonModel):
    """Items stored as a YAML/JSON list in a ConfigMap key."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, description="ConfigMap name in the Benchmark's namespace.")
    key: str = Field(min_length=1, description="Key holding the YAML or JSON list of items.")


class UriItemsRef(BatonModel):
    """Items stored as a JSON Lines file, pinned by digest."""

    url: str = Field(min_length=1, description="http(s):// URL or absolute path of a JSON Lines file.")
    digest: str = Field(pattern=DIGEST_PATTERN, description="sha256 digest of the file.")


class BenchmarkSpec(BatonModel):
    """A domain evaluation suite: items from exactly one source, a scorer and decoding settings."""

    model_config = with_rules(
        Rule(
            cel="[has(self.inline), has(self.configMapRef), has(self.uri)].filter(x, x).size() == 1",
            holds=lambda self: [self.inline, self.config_map_ref, self.uri].count(None) == 2,
            message="exactly one of inline, configMapRef or uri must be set",
        )
    )

    domain: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Domain this suite evaluates.")
    description: str = Field(default="", description="What the suite measures.")
    inline: list[BenchmarkItem] | None = Field(
        default=None, min_length=1, max_length=2000, description="Items written inline."
    )
    config_map_ref: ConfigMapItemsRef | None = Field(default=None, description="Items from a ConfigMap.")
    uri: UriItemsRef | None = Field(
        default=None, description="Items from a JSON Lines file pinned by digest."
    )
    scorer: Scorer = Field(description="How each answer is scored.")
    system_prompt: str | None = Field(default=None, description="System message sent before every item.")
    max_tokens: int = Field(default=64, ge=1, le=4096, description="Maximum tokens generated per item.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature (0 = greedy).")


class BenchmarkStatus(BatonModel):
    """What the operator last observed about the suite."""

    observed_generation: int | None = Field(default=None, description="Generation last validated.")
    items: int | None = Field(default=None, ge=0, description="Number of items found.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions (`Ready`).")


class Benchmark(Resource):
    kind_name: ClassVar[str] = "Benchmark"
    plural: ClassVar[str] = "benchmarks"
    short_names: ClassVar[tuple[str, ...]] = ("bm",)
    description: ClassVar[str] = "A domain evaluation suite: items, scorer and decoding settings."
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(
            name="Domain", type="string", json_path=".spec.domain", description="Domain evaluated."
        ),
        PrinterColumn(
            name="Scorer", type="string", json_path=".spec.scorer.type", description="Scorer type."
        ),
        PrinterColumn(name="Items", type="integer", json_path=".status.items", description="Items found."),
    )

    kind: Literal["Benchmark"] = Field(default="Benchmark", description="Benchmark.")
    spec: BenchmarkSpec = Field(description="The suite.")
    status: BenchmarkStatus | None = Field(default=None, description="Written by the operator.")
