"""`ModelTuning`: a domain team's data in, a measured candidate out.

A team with a chat JSON Lines file and no ML infrastructure declares what to tune (the
deployment's champion, or a pinned artifact), on which data (pinned by digest), how long and
into which quantizations. The run's outputs become ModelCandidates of the deployment, each
file pinned by digest with its provenance, and go through the same benchmark and canary gate as
any other version: tuning never promotes anything by itself. A run that fails ends `Failed`
with the reason and offers no candidate.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from baton.api.benchmark import UriItemsRef
from baton.api.common import (
    DNS_LABEL_PATTERN,
    Artifact,
    BatonModel,
    Condition,
    PrinterColumn,
    Quantization,
    Resource,
    Rule,
    with_rules,
)

# An inline dataset rides in the resource itself, and etcd keeps objects under 1.5 MiB.
INLINE_DATASET_LIMIT = 512 * 1024
# The quantizations the factory's trainer writes (GGUF, by llama.cpp's quantizer).
TUNED_QUANTIZATIONS = ("F16", "Q8_0", "Q4_K_M", "TQ1_0", "TQ2_0")


class TuningDataset(BatonModel):
    """Chat-format JSON Lines, one example a line:
    `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`."""

    model_config = with_rules(
        Rule(
            cel="[has(self.inline), has(self.uri)].filter(x, x).size() == 1",
            holds=lambda self: (self.inline is None) != (self.uri is None),
            message="exactly one of inline or uri must be set",
        )
    )

    inline: str | None = Field(
        default=None,
        min_length=1,
        max_length=INLINE_DATASET_LIMIT,
        description="The JSON Lines text itself (small data sets; its digest is recorded in provenance).",
    )
    uri: UriItemsRef | None = Field(default=None, description="A JSON Lines file pinned by digest.")


class Hyperparameters(BatonModel):
    """Training settings; the defaults suit the factory's small models and a few thousand examples."""

    steps: int = Field(default=150, ge=1, le=100_000, description="Optimizer steps.")
    batch_size: int = Field(default=16, ge=1, le=1024, description="Sequences per step.")
    learning_rate: float = Field(default=1e-3, gt=0, le=1, description="Peak AdamW learning rate.")
    warmup: int = Field(default=10, ge=0, le=100_000, description="Linear warm-up steps.")


class ModelTuningSpec(BatonModel):
    """A fine-tuning run whose outputs are offered to a deployment as candidates."""

    model_config = with_rules(
        Rule(
            cel="self.hyperparameters.warmup < self.hyperparameters.steps",
            holds=lambda self: self.hyperparameters.warmup < self.hyperparameters.steps,
            message="warmup must be shorter than steps",
            field_path=".hyperparameters.warmup",
        ),
        Rule(
            cel="self.quantizations.all(q, q in " + str(list(TUNED_QUANTIZATIONS)) + ")",
            holds=lambda self: all(q in TUNED_QUANTIZATIONS for q in self.quantizations),
            message="the trainer writes only " + ", ".join(TUNED_QUANTIZATIONS),
            field_path=".quantizations",
        ),
    )

    deployment: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="ModelDeployment (same namespace) the tuned versions are offered to.",
    )
    version: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=40,
        description="Version name of the tuned model, e.g. `v2-tuned`; candidates add the quantization.",
    )
    base: Artifact | None = Field(
        default=None,
        description=(
            "The GGUF model tuned from, pinned by digest (a quantized file is tuned from its rounded "
            "weights). Omitted: the deployment's champion when the run starts, pinned by its own digest."
        ),
    )
    dataset: TuningDataset = Field(description="The examples, chat-format JSON Lines.")
    hyperparameters: Hyperparameters = Field(
        default_factory=Hyperparameters, description="Training settings."
    )
    quantizations: list[Quantization] = Field(
        default_factory=lambda: [Quantization.Q8_0],
        min_length=1,
        max_length=len(TUNED_QUANTIZATIONS),
        description="Output files, one candidate each, in this order: "
        + ", ".join(TUNED_QUANTIZATIONS)
        + ".",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the batch order.")


class TuningPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class ModelTuningStatus(BatonModel):
    """How far the run is and what it produced."""

    observed_generation: int | None = Field(
        default=None, description="Generation the status was computed from."
    )
    phase: TuningPhase = Field(default=TuningPhase.PENDING, description="Where the run stands.")
    step: int = Field(default=0, ge=0, description="Optimizer steps done.")
    steps: int | None = Field(default=None, ge=1, description="Optimizer steps in total.")
    loss: float | None = Field(default=None, description="Training loss of the last step.")
    eta: str | None = Field(default=None, description="Estimated time left, e.g. `42s`.")
    message: str = Field(default="", description="The reason of a failure, or a summary.")
    start_time: str | None = Field(default=None, description="RFC 3339 time the run started.")
    completion_time: str | None = Field(default=None, description="RFC 3339 time the run ended.")
    candidates: list[str] = Field(
        default_factory=list, max_length=len(TUNED_QUANTIZATIONS), description="ModelCandidates it created."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Standard conditions (`Complete`, `Failed`)."
    )


class ModelTuning(Resource):
    kind_name: ClassVar[str] = "ModelTuning"
    plural: ClassVar[str] = "modeltunings"
    short_names: ClassVar[tuple[str, ...]] = ("mt",)
    description: ClassVar[str] = (
        "A fine-tuning run on a team's chat JSON Lines; its outputs become the deployment's candidates."
    )
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Deployment", type="string", json_path=".spec.deployment", description="Target."),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase", description="Run phase."),
        PrinterColumn(name="Step", type="integer", json_path=".status.step", description="Steps done."),
        PrinterColumn(name="Loss", type="number", json_path=".status.loss", description="Last loss."),
        PrinterColumn(name="ETA", type="string", json_path=".status.eta", description="Time left."),
        PrinterColumn(
            name="Candidate", type="string", json_path=".status.candidates[0]", description="First output."
        ),
    )

    kind: Literal["ModelTuning"] = Field(default="ModelTuning", description="ModelTuning.")
    spec: ModelTuningSpec = Field(description="What to tune, on which data, into which files.")
    status: ModelTuningStatus | None = Field(default=None, description="Written by the operator.")
