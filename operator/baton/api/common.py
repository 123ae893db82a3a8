"""Building blocks shared by every baton resource: the base model, metadata, conditions, artifacts.

The pydantic types in `baton.api` are the single source of truth for the CRD schemas
(`baton crds`), for validation in local mode, and for the reference docs. Everything here is
written so that the generated OpenAPI schema is structural and `kubectl explain` has a
description for every field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

from baton_serving.wire import DIGEST_PATTERN, Quantization, field_path

GROUP = "baton.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
# The pydantic error type of a broken cross-field `Rule`.
RULE_ERROR = "rule"


class BatonModel(BaseModel):
    """Strict, camelCase-on-the-wire base for every spec and status type.

    Python code uses snake_case attributes; YAML and the Kubernetes API use camelCase, as
    Kubernetes conventions require. Unknown fields are errors, never silently dropped.
    """

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        use_enum_values=True,
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict that goes into YAML or the Kubernetes API (unset fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @model_validator(mode="after")
    def _rules_hold(self) -> Self:
        extra = type(self).model_config.get("json_schema_extra")
        for rule in extra.rules if isinstance(extra, Rules) else ():
            if not rule.holds(self):
                # The rule's own field path travels in ctx: pydantic locates the error at this
                # model, the API server at `fieldPath` below it (`api_location` joins the two).
                raise PydanticCustomError(RULE_ERROR, rule.message, {"field_path": rule.field_path or ""})
        return self


@dataclass(frozen=True)
class Rule:
    """A cross-field rule, declared once for both validators.

    `cel` is what the API server evaluates at apply time (`x-kubernetes-validations`); `holds` is
    the same condition in Python, checked wherever the types validate (`baton up`, the operator,
    `baton validate`), so a cluster and a laptop never disagree on what is valid. The integration
    test against a real API server checks that the two halves agree.
    """

    cel: str
    holds: Callable[[Any], bool]
    message: str
    field_path: str | None = None
    reason: str = "FieldValueInvalid"

    def wire(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field_path:
            rule["fieldPath"] = self.field_path
        return rule | {"reason": self.reason}


class Rules:
    """The `json_schema_extra` of a model with cross-field rules: publishes them for the CRD."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules

    def __call__(self, schema: dict[str, Any]) -> None:
        schema["x-kubernetes-validations"] = [rule.wire() for rule in self.rules]


def listed_once(field: str, attribute: str, what: str) -> Rule:
    """The rule that no item of the list `field` (`attribute` in Python) appears twice."""
    return Rule(
        cel=f"self.{field}.all(q, self.{field}.exists_one(x, x == q))",
        holds=lambda self: len(set(getattr(self, attribute))) == len(getattr(self, attribute)),
        message=f"each {what} may be listed once",
        field_path=f".{field}",
        reason="FieldValueDuplicate",
    )


def with_rules(*rules: Rule) -> ConfigDict:
    """The model config of a BatonModel whose instances must satisfy `rules`."""
    return BatonModel.model_config | ConfigDict(json_schema_extra=Rules(*rules))


def api_location(error: ErrorDetails) -> tuple[str | int, ...]:
    """Where a pydantic validation error is, as the API server locates the same refusal.

    Pydantic puts a cross-field rule's error at the model that declares it and may add validator
    tags (`function-after[...]`) to `loc`; the API server names the rule's `fieldPath` below that
    model and knows no tags. `field_path(api_location(error))` is then the path `kubectl` prints,
    e.g. `spec.rollout.steps[1].weight` or, for a rule, `spec.analysis.margin`.
    """
    location = tuple(part for part in error["loc"] if not _is_validator_tag(part))
    rule_path = (error.get("ctx") or {}).get("field_path", "") if error["type"] == RULE_ERROR else ""
    return location + tuple(part for part in rule_path.split(".") if part)


def api_field_path(error: ErrorDetails) -> str:
    """`api_location` in the API server's notation (`spec.rollout.steps[1].weight`)."""
    return field_path(api_location(error)) or "(document)"


def _is_validator_tag(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


class ArtifactFormat(StrEnum):
    GGUF = "gguf"
    SAFETENSORS = "safetensors"


class Adapter(BatonModel):
    """A LoRA adapter in llama.cpp's GGUF format (`general.type = adapter`), pinned by its own digest."""

    uri: str = Field(min_length=1, description="Where the adapter file is, as for the artifact's `uri`.")
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256 digest of the adapter file, `sha256:<64 hex>`. A mismatch fails the model.",
    )
    size_bytes: int | None = Field(default=None, ge=1, description="Adapter file size in bytes.")


class Artifact(BatonModel):
    """A model file pinned by content digest: it is verified before it ever serves."""

    model_config = with_rules(
        Rule(
            cel="!has(self.adapter) || self.format == 'gguf'",
            holds=lambda self: self.adapter is None or self.format == ArtifactFormat.GGUF,
            message="a LoRA adapter is served by llama.cpp over a gguf artifact",
            field_path=".adapter",
        )
    )

    uri: str = Field(
        min_length=1,
        description=(
            "Where the weights are: an absolute path or file:// URI (a mounted volume or PVC), "
            "or an http(s):// URL (a model mirror)."
        ),
    )
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256 digest of the file, as `sha256:<64 lowercase hex>`. A mismatch fails the model.",
    )
    format: ArtifactFormat = Field(
        default=ArtifactFormat.GGUF, description="File format: `gguf` (llama.cpp) or `safetensors` (vLLM)."
    )
    quantization: Quantization = Field(description="Weight quantization of the file.")
    size_bytes: int | None = Field(
        default=None, ge=1, description="File size in bytes, used to size engine replicas before download."
    )
    adapter: Adapter | None = Field(
        default=None,
        description="A LoRA adapter applied over these weights (the file above is then its base). Both "
        "files are checked against their digests before either loads.",
    )


class Provenance(BatonModel):
    """Where a model version came from, so a decision can be traced back to training."""

    base_model: str | None = Field(
        default=None, description="The model this version was trained or tuned from."
    )
    training_run: str | None = Field(
        default=None, description="Identifier of the training run or pipeline job."
    )
    data: str | None = Field(default=None, description="Identifier or description of the training data set.")
    recipe_hash: str | None = Field(default=None, description="Content hash of the training recipe.")
    seed: int | None = Field(default=None, description="Training seed.")
    base_digest: str | None = Field(
        default=None, pattern=DIGEST_PATTERN, description="sha256 digest of the model it was tuned from."
    )
    data_digest: str | None = Field(
        default=None, pattern=DIGEST_PATTERN, description="sha256 digest of the training data set."
    )
    code_version: str | None = Field(default=None, description="Version of the code that trained it.")


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(BatonModel):
    """A standard Kubernetes status condition (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. `Ready`, `Progressing`, `Degraded`.")
    status: ConditionStatus = Field(description="`True`, `False` or `Unknown`.")
    reason: str = Field(description="CamelCase machine-readable reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="RFC 3339 time when the status last changed.")
    observed_generation: int | None = Field(
        default=None, description="The `.metadata.generation` this condition was computed from."
    )


class ObjectMeta(BaseModel):
    """The parts of Kubernetes object metadata baton reads.

    Unlike baton's own types this one tolerates unknown keys: the API server adds many
    (uid, managedFields, ...) that baton neither owns nor validates.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(description="Object name.")
    namespace: str | None = Field(default=None, description="Namespace (omitted in local mode).")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    generation: int | None = Field(default=None, description="Spec generation, set by the API server.")


class PrinterColumn(BaseModel):
    """One `additionalPrinterColumns` entry of a CRD (what `kubectl get` shows)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0


class Resource(BatonModel):
    """Base of every baton custom resource: apiVersion/kind/metadata + spec + status.

    Subclasses declare the CRD's naming and printer columns as class variables, so the
    generator (`baton.api.crd`) needs nothing but the type.
    """

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]]
    printer_columns: ClassVar[tuple[PrinterColumn, ...]]
    description: ClassVar[str]

    api_version: Literal["baton.dev/v1alpha1"] = Field(
        default=API_VERSION, description="Always baton.dev/v1alpha1."
    )
    kind: str = Field(description="The resource kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")

    @classmethod
    def age_column(cls) -> PrinterColumn:
        return PrinterColumn(
            name="Age",
            type="date",
            json_path=".metadata.creationTimestamp",
            description="Time since creation.",
        )
