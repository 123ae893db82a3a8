"""`ModelTuning`: a domain team's data in, a measured candidate out.

A team with a chat JSON Lines file and no ML infrastructure declares what to tune (the
deployment's champion, or a pinned artifact), on which data (pinned by digest), how long and
into which quantizations. The run's outputs become ModelCandidates of the deployment, each
file pinned by digest with its provenance, and go through the same benchmark and canary gate as
any other version: tuning never promotes anything by itself. A run that fails ends `Failed`
with the reason and offers no candidate.

`method: lora` trains low-rank adapters over the frozen base instead: the candidate is the base as
pinned plus one small adapter file, so many domains' versions can share one base file.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from baton.api.benchmark import ConfigMapItemsRef, UriItemsRef
from baton.api.common import (
    DNS_LABEL_PATTERN,
    Artifact,
    BatonModel,
    Condition,
    PrinterColumn,
    Quantization,
    Resource,
    Rule,
    listed_once,
    with_rules,
)

# An inline dataset rides in the resource itself, and etcd keeps objects under 1.5 MiB.
INLINE_DATASET_LIMIT = 512 * 1024
# The quantizations the factory's trainer writes (GGUF, by llama.cpp's quantizer).
TUNED_QUANTIZATIONS = ("F16", "Q8_0", "Q4_K_M", "TQ1_0", "TQ2_0")
DEFAULT_QUANTIZATIONS = ("Q8_0",)
# A rank past this is no longer a low-rank update of the factory's (or any small) model: tune it fully.
MAX_LORA_RANK = 256


class TuningMethod(StrEnum):
    FULL = "full"
    LORA = "lora"


class LoraTarget(StrEnum):
    """A block weight an adapter may train (llama.cpp's tensor names)."""

    ATTN_Q = "attn_q"
    ATTN_K = "attn_k"
    ATTN_V = "attn_v"
    ATTN_OUTPUT = "attn_output"
    FFN_GATE = "ffn_gate"
    FFN_UP = "ffn_up"
    FFN_DOWN = "ffn_down"


class LoraSettings(BatonModel):
    """Low-rank adapters: `W x + alpha/rank * B A x` beside each targeted weight of every block."""

    model_config = with_rules(listed_once("targetModules", "target_modules", "target module"))

    rank: int = Field(
        default=8,
        ge=1,
        le=MAX_LORA_RANK,
        description="Rank of each adapter. At most the smaller side of every targeted weight: a larger "
        "rank fails the run naming this field (the base's shape is known only once it is read).",
    )
    alpha: float = Field(
        default=16.0, gt=0, le=4096, description="Scale numerator: each update is scaled by alpha / rank."
    )
    target_modules: list[LoraTarget] = Field(
        default_factory=lambda: list(LoraTarget),
        min_length=1,
        max_length=len(LoraTarget),
        description="Block weights that get an adapter (default: every linear weight of each block).",
    )


class TuningDataset(BatonModel):
    """Chat-format JSON Lines, one example a line:
    `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`."""

    model_config = with_rules(
        Rule(
            cel="[has(self.inline), has(self.configMapRef), has(self.uri)].filter(x, x).size() == 1",
            holds=lambda self: [self.inline, self.config_map_ref, self.uri].count(None) == 2,
            message="exactly one of inline, configMapRef or uri must be set",
        )
    )

    inline: str | None = Field(
        default=None,
        min_length=1,
        max_length=INLINE_DATASET_LIMIT,
        description="The JSON Lines text itself (small data sets; its digest is recorded in provenance).",
    )
    config_map_ref: ConfigMapItemsRef | None = Field(
        default=None,
        description="A key of a ConfigMap in the tuning's namespace holding the JSON Lines text (at most "
        "1 MiB, the API server's bound; its digest is recorded in provenance). Clusters only.",
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
            cel="!has(self.quantizations) || self.quantizations.all(q, q in "
            + str(list(TUNED_QUANTIZATIONS))
            + ")",
            holds=lambda self: all(q in TUNED_QUANTIZATIONS for q in self.quantizations or ()),
            message="the trainer writes only " + ", ".join(TUNED_QUANTIZATIONS),
            field_path=".quantizations",
        ),
        Rule(
            cel="self.method == 'lora' || !has(self.lora)",
            holds=lambda self: self.method == TuningMethod.LORA or self.lora is None,
            message="lora settings need method: lora",
            field_path=".lora",
        ),
        Rule(
            cel="self.method != 'lora' || !has(self.quantizations)",
            holds=lambda self: self.method != TuningMethod.LORA or self.quantizations is None,
            message="a LoRA adapter is served over the base as pinned: quantizations are for method: full",
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
    method: TuningMethod = Field(
        default=TuningMethod.FULL,
        description="`full`: every weight trains, and each output quantization is a new model file. "
        "`lora`: only low-rank adapters train over the frozen base; the candidate is the base as "
        "pinned plus a llama.cpp GGUF LoRA adapter, both checked by digest before they load.",
    )
    lora: LoraSettings | None = Field(
        default=None, description="Adapter settings of `method: lora` (defaults when omitted)."
    )
    quantizations: list[Quantization] | None = Field(
        default=None,
        min_length=1,
        max_length=len(TUNED_QUANTIZATIONS),
        description="`method: full` only: output files, one candidate each, in this order ("
        + ", ".join(TUNED_QUANTIZATIONS)
        + "; default "
        + ", ".join(DEFAULT_QUANTIZATIONS)
        + ").",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seed of the batch order and adapter init.")

    @property
    def lora_settings(self) -> LoraSettings | None:
        """The adapter settings of a LoRA run (defaults filled in), None for a full one."""
        return (self.lora or LoraSettings()) if self.method == TuningMethod.LORA else None

    @property
    def output_quantizations(self) -> list[str]:
        """The files a full run writes (none for LoRA)."""
        if self.method == TuningMethod.LORA:
            return []
        return [str(q) for q in self.quantizations or DEFAULT_QUANTIZATIONS]


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
