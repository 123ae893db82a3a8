"""`ModelCandidate` and `ModelSource`: how new model versions arrive.

A training pipeline applies a ModelCandidate; or a ModelSource is polled and creates them.
Either way the candidate's artifact is pinned by digest, and its status records how its
evaluation ended — a corrupt artifact fails the candidate, never the serving champion.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from baton.api.common import (
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    Artifact,
    BatonModel,
    Condition,
    PrinterColumn,
    Provenance,
    Quantization,
    Resource,
    Rule,
    listed_once,
    with_rules,
)
from baton.api.decision import Decision
from baton.api.deployment import RECORD_LIMIT, Phase

# A source in a bad state lists this many refused releases; the count of the others is in the condition.
REJECTED_LIMIT = 16


class ModelCandidateSpec(BatonModel):
    """A new model version offered to a deployment."""

    deployment: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="ModelDeployment (same namespace) this version is for.",
    )
    version: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Version name, e.g. `v2`.")
    artifact: Artifact = Field(description="The weights, pinned by digest.")
    provenance: Provenance | None = Field(default=None, description="Where the version came from.")


class BenchmarkScore(BatonModel):
    """Mean benchmark score of both arms on the same items."""

    benchmark: str = Field(description="Benchmark name.")
    items: int = Field(ge=0, description="Items both arms answered validly.")
    champion: float | None = Field(default=None, description="Champion mean score in [0, 1].")
    candidate: float | None = Field(default=None, description="Candidate mean score in [0, 1].")


class ModelCandidateStatus(BatonModel):
    """How the candidate's evaluation went."""

    observed_generation: int | None = Field(
        default=None, description="Generation the status was computed from."
    )
    phase: Phase = Field(default=Phase.PENDING, description="Where the candidate stands.")
    message: str = Field(default="", description="Human-readable summary of the current phase.")
    scores: list[BenchmarkScore] = Field(
        default_factory=list, max_length=16, description="Benchmark results."
    )
    decision: Decision | None = Field(default=None, description="Final decision and its evidence.")
    record: list[Decision] = Field(
        default_factory=list,
        max_length=RECORD_LIMIT,
        description=(
            "The whole decision record of the candidate's rollout with its evidence, oldest first: the "
            "offline paired test, each canary step, the bake and the final verdict."
        ),
    )
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")


class ModelCandidate(Resource):
    kind_name: ClassVar[str] = "ModelCandidate"
    plural: ClassVar[str] = "modelcandidates"
    short_names: ClassVar[tuple[str, ...]] = ("mc",)
    description: ClassVar[str] = "A new model version offered to a ModelDeployment, pinned by digest."
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Deployment", type="string", json_path=".spec.deployment", description="Target."),
        PrinterColumn(name="Version", type="string", json_path=".spec.version", description="Version."),
        PrinterColumn(
            name="Quant", type="string", json_path=".spec.artifact.quantization", description="Quantization."
        ),
        PrinterColumn(
            name="Phase", type="string", json_path=".status.phase", description="Evaluation phase."
        ),
        PrinterColumn(
            name="Reason", type="string", json_path=".status.decision.reason", description="Decision reason."
        ),
    )

    kind: Literal["ModelCandidate"] = Field(default="ModelCandidate", description="ModelCandidate.")
    spec: ModelCandidateSpec = Field(description="The offered version.")
    status: ModelCandidateStatus | None = Field(default=None, description="Written by the operator.")


class DirectorySource(BatonModel):
    """A directory (a mounted volume or PVC) where new GGUF releases are dropped."""

    path: str = Field(pattern=r"^/", description="Absolute directory path.")
    pattern: str = Field(default="*.gguf", min_length=1, description="Glob of release files.")


class HttpIndexSource(BatonModel):
    """An HTTP index (JSON list of {version, uri, digest, quantization}) published by a model mirror."""

    index_url: str = Field(pattern=r"^https?://", description="URL of the JSON index.")


# A name segment as Ollama and the hub spell them: it starts with a letter or digit, so no segment
# is `.` or `..` and a name can never climb out of the directory it is looked up in.
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}"
OLLAMA_MODEL_PATTERN = rf"^({_SEGMENT}/){{0,2}}{_SEGMENT}$"
REPOSITORY_PATTERN = rf"^{_SEGMENT}/{_SEGMENT}$"
# An Ollama tag (types/model/name.go).
OLLAMA_TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,79}$"
REVISION_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$"


class OllamaSource(BatonModel):
    """An Ollama model store (what `OLLAMA_MODELS` points at): every tag of one model is a release."""

    path: str = Field(
        pattern=r"^/",
        description="Absolute path of the store, the directory holding `manifests/` and `blobs/` "
        "(`~/.ollama/models` on a laptop, a volume on a cluster).",
    )
    model: str = Field(
        pattern=OLLAMA_MODEL_PATTERN,
        max_length=243,
        description="Model name without the tag, as `ollama pull` takes it: `medical` "
        "(`registry.ollama.ai/library/medical`), `team/medical` or `registry.example.com/team/medical`.",
    )
    moving_tags: list[Annotated[str, Field(pattern=OLLAMA_TAG_PATTERN, max_length=80)]] = Field(
        default_factory=lambda: ["latest"],
        max_length=16,
        description="Tags that move to new weights (a new digest under one is a new release, version "
        "`<tag>-<first 12 hex digits of the digest>`). Every other tag is a version: new weights under "
        "a version already offered are reported as republished, never offered.",
    )


class LmStudioSource(BatonModel):
    """LM Studio's models directory (`<publisher>/<repository>/<file>.gguf`): the files of one repository."""

    path: str = Field(
        pattern=r"^/",
        description="Absolute path of the models directory (`~/.lmstudio/models` on a laptop).",
    )
    repository: str = Field(
        pattern=REPOSITORY_PATTERN, max_length=161, description="`<publisher>/<repository>` under it."
    )
    pattern: str = Field(default="*.gguf", min_length=1, description="Glob of release files.")


class HuggingFaceSource(BatonModel):
    """A model repository on the Hugging Face hub or an internal mirror: its GGUF files at a revision."""

    repository: str = Field(pattern=REPOSITORY_PATTERN, max_length=161, description="`<owner>/<name>`.")
    endpoint: str = Field(
        default="https://huggingface.co",
        pattern=r"^https?://",
        description="Base URL of the hub or the mirror.",
    )
    revision: str = Field(
        default="main",
        pattern=REVISION_PATTERN,
        max_length=255,
        description="Branch, tag or commit to follow; each candidate pins the commit it was found at.",
    )
    pattern: str = Field(
        default="*.gguf", min_length=1, description="Glob of release files in the repository."
    )


_KINDS = ("directory", "http", "ollama", "lmstudio", "huggingface")


class ModelSourceSpec(BatonModel):
    """Where new releases of one deployment's model appear."""

    model_config = with_rules(
        Rule(
            cel="[" + ", ".join(f"has(self.{kind})" for kind in _KINDS) + "].filter(x, x).size() == 1",
            holds=lambda self: sum(getattr(self, kind) is not None for kind in _KINDS) == 1,
            message=f"exactly one of {', '.join(_KINDS)} must be set",
        ),
        listed_once("quantizations", "quantizations", "quantization"),
    )

    deployment: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="ModelDeployment the releases are for."
    )
    directory: DirectorySource | None = Field(default=None, description="Poll a directory.")
    http: HttpIndexSource | None = Field(default=None, description="Poll an HTTP index.")
    ollama: OllamaSource | None = Field(default=None, description="Poll an Ollama model store.")
    lmstudio: LmStudioSource | None = Field(default=None, description="Poll LM Studio's models directory.")
    huggingface: HuggingFaceSource | None = Field(
        default=None, description="Poll a Hugging Face hub repository or a mirror of it."
    )
    poll_interval: str = Field(default="30s", pattern=DURATION_PATTERN, description="How often to poll.")
    quantization: Quantization | None = Field(
        default=None, description="Quantization of discovered files when the release does not say."
    )
    quantizations: list[Quantization] = Field(
        default_factory=list,
        max_length=len(Quantization),
        description=(
            "The quantizations to offer, in this order (e.g. cheapest first): each release's files in "
            "them become one ModelCandidate each, `<deployment>-<version>-<quantization>`, the next "
            "only once the one before it was decided and not promoted; other quantizations are "
            "ignored. Empty: one ModelCandidate per version, `<deployment>-<version>`."
        ),
    )
    candidate_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels put on the ModelCandidates it creates."
    )


class ModelSourceStatus(BatonModel):
    observed_generation: int | None = Field(
        default=None, description="Generation the status was computed from."
    )
    last_poll_time: str | None = Field(default=None, description="RFC 3339 time of the last poll.")
    discovered: int = Field(default=0, ge=0, description="Releases turned into ModelCandidates so far.")
    last_version: str | None = Field(default=None, description="Version of the newest release seen.")
    rejected: list[str] = Field(
        default_factory=list,
        max_length=REJECTED_LIMIT,
        description="Releases the last poll found and refused to offer, each with why (a missing or "
        "corrupt blob, a hash that differs from the one recorded, weights republished under a version "
        "already offered, a name that leaves the source's root). The `Degraded` condition says the same.",
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Standard conditions (`Ready`, `Degraded`)."
    )


class ModelSource(Resource):
    kind_name: ClassVar[str] = "ModelSource"
    plural: ClassVar[str] = "modelsources"
    short_names: ClassVar[tuple[str, ...]] = ("msrc",)
    description: ClassVar[str] = (
        "A place where new model releases appear; baton polls it and creates candidates."
    )
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Deployment", type="string", json_path=".spec.deployment", description="Target."),
        PrinterColumn(
            name="Interval", type="string", json_path=".spec.pollInterval", description="Poll interval."
        ),
        PrinterColumn(
            name="Found", type="integer", json_path=".status.discovered", description="Releases found."
        ),
        PrinterColumn(
            name="Last", type="string", json_path=".status.lastVersion", description="Newest release."
        ),
    )

    kind: Literal["ModelSource"] = Field(default="ModelSource", description="ModelSource.")
    spec: ModelSourceSpec = Field(description="Where to look and how often.")
    status: ModelSourceStatus | None = Field(default=None, description="Written by the operator.")
