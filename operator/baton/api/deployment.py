"""`ModelDeployment`: one domain endpoint, its rollout strategy and its replacement policy.

The spec is what a platform team declares (and what GitOps owns); the status is what baton
observed and decided — the serving champion, the candidate under evaluation, the traffic
weight and the evidence of the last decision. The operator writes status only, never spec.
"""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Any, ClassVar, Literal

from pydantic import Field

from baton.api.common import (
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    Artifact,
    BatonModel,
    Condition,
    PrinterColumn,
    Provenance,
    Resource,
    Rule,
    with_rules,
)
from baton.api.decision import Decision
from baton_serving.config import DEFAULT_MAX_OUTPUT_TOKENS

# A rollout's record: the offline decision, at most 20 canary steps, the bake and the final verdict.
RECORD_LIMIT = 24
HISTORY_LIMIT = 50


class Runtime(StrEnum):
    """Which data plane serves the deployment."""

    LLAMACPP = "llamacpp"
    VLLM = "vllm"
    KSERVE = "kserve"


class ModelVersion(BatonModel):
    """A model version: a name for humans and an artifact pinned by digest."""

    version: str = Field(
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Version name, unique within the deployment (e.g. v1).",
    )
    artifact: Artifact = Field(description="The weights, pinned by digest.")
    provenance: Provenance | None = Field(default=None, description="Where this version came from.")


class EngineAutoscaling(BatonModel):
    """Replicas added while requests wait and removed when the load falls (Ray Serve autoscaling).

    Each revision, the champion and a canary alike, runs at least `engine.replicas` and at most
    `maxReplicas`; never none, so a canary under analysis always has replicas to answer.
    """

    max_replicas: int = Field(ge=1, le=64, description="Most engine replicas per revision.")
    target_ongoing_requests: float | None = Field(
        default=None,
        gt=0,
        le=4096,
        description="Requests in progress per replica that Serve scales to (default: half a "
        "replica's parallel slots, so a replica is added before the slots are full).",
    )
    look_back: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        description="The window over which the requests in progress are averaged.",
    )
    scale_up_delay: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        description="How long the load stays above the target before a replica is added.",
    )
    scale_down_delay: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        description="How long the load stays below the target before a replica is removed.",
    )


class EngineSettings(BatonModel):
    """Engine knobs that apply to every revision of the deployment."""

    model_config = with_rules(
        Rule(
            cel="self.maxOutputTokens < self.contextLength",
            holds=lambda self: self.max_output_tokens < self.context_length,
            message="maxOutputTokens must be less than contextLength: the prompt needs room in the window",
            field_path=".maxOutputTokens",
        ),
        Rule(
            cel="!has(self.autoscaling) || self.autoscaling.maxReplicas >= self.replicas",
            holds=lambda self: self.autoscaling is None or self.autoscaling.max_replicas >= self.replicas,
            message="autoscaling.maxReplicas must be at least replicas (the fewest replicas)",
            field_path=".autoscaling.maxReplicas",
        ),
    )

    context_length: int = Field(default=512, ge=16, le=131072, description="Context window in tokens.")
    max_output_tokens: int = Field(
        default=DEFAULT_MAX_OUTPUT_TOKENS,
        ge=1,
        le=32768,
        description=(
            "Most output tokens a client may ask for: a request with a larger `max_tokens` (or "
            "`max_completion_tokens`) is refused with 400 in OpenAI's error shape, never clamped into a "
            "shorter answer than asked for. A request that asks for none gets this many, at most half the "
            "context window. Less than `contextLength`."
        ),
    )
    threads: int | None = Field(default=None, ge=1, le=256, description="CPU threads per llama.cpp replica.")
    replicas: int = Field(
        default=1, ge=1, le=64, description="Engine replicas per revision; the fewest with `autoscaling`."
    )
    autoscaling: EngineAutoscaling | None = Field(
        default=None,
        description="Scale each revision between `replicas` and `autoscaling.maxReplicas` by its "
        "requests in progress; unset: always `replicas`.",
    )


class StructuredOutput(BatonModel):
    """The deployment's default structured-output contract (clients may still send their own).

    The ingress constrains the answer to every chat request that sends no `response_format` to
    `jsonSchema`, and counts those answers in the structured-output validity metric (a `validity`
    online metric) against it. A schema the ingress refuses (not a JSON Schema, or past the pool's
    request limits) fails those requests with 500: the deployment is misconfigured, not the client.
    """

    name: str = Field(
        min_length=1, max_length=64, description="Schema name, as in OpenAI's `json_schema.name`."
    )
    json_schema: dict[str, Any] = Field(
        description="JSON Schema of the output (e.g. a pydantic model's schema)."
    )


class CanaryStep(BatonModel):
    """One step of the canary: a traffic weight held until the analysis may decide."""

    weight: int = Field(
        ge=1,
        le=99,
        description=(
            "Percent of live traffic sent to the candidate while it is compared with the champion "
            "(1-99: the champion must keep traffic to compare against; all traffic moves at promotion)."
        ),
    )
    pause: str = Field(
        default="30s",
        pattern=DURATION_PATTERN,
        description="Minimum time at this weight, e.g. `30s`, `5m`, `1h`.",
    )
    min_requests: int = Field(
        default=50, ge=0, le=1_000_000, description="Candidate requests needed before the step may complete."
    )


def _default_steps() -> list[CanaryStep]:
    return [CanaryStep(weight=10), CanaryStep(weight=50)]


class RolloutStrategy(BatonModel):
    """How a candidate is exposed to live traffic once it passed the offline gate."""

    model_config = with_rules(
        Rule(
            cel="self.steps.map(s, s.weight).isSorted() && "
            "self.steps.all(s, self.steps.filter(t, t.weight == s.weight).size() == 1)",
            holds=lambda self: all(a.weight < b.weight for a, b in pairwise(self.steps)),
            message="canary step weights must be strictly increasing",
            field_path=".steps",
        )
    )

    steps: list[CanaryStep] = Field(
        default_factory=_default_steps,
        min_length=1,
        max_length=20,
        description=(
            "Canary steps; weights strictly increasing within 1..99. Promotion (all traffic to the "
            "candidate) follows the last step, once every gate passed."
        ),
    )
    sticky_session_header: str = Field(
        default="X-Baton-Session",
        pattern=r"^[A-Za-z0-9-]+$",
        max_length=64,
        description="Request header whose value pins a client to one revision while weights stay.",
    )
    shadow: bool = Field(
        default=False,
        description=(
            "Mirror champion traffic to the candidate before the canary (answers recorded, never returned)."
        ),
    )
    progress_deadline: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        description=(
            "Longest a phase may wait: a candidate still loading or benchmarking past it fails; a canary "
            "step still short of samples this long after its pause ended is Inconclusive. The champion "
            "keeps serving."
        ),
    )
    bake_time: str = Field(
        default="0s",
        pattern=DURATION_PATTERN,
        description=(
            "After a promotion, how long the previous champion stays loaded and receives mirrored traffic "
            "while the online metrics compare the two; a regression in that window rolls back to it. "
            "`0s`: no bake."
        ),
    )


class TestMode(StrEnum):
    SUPERIORITY = "superiority"
    NON_INFERIORITY = "nonInferiority"


class BenchmarkRef(BatonModel):
    """A Benchmark in the same namespace and its weight in the offline gate."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=253, description="Benchmark name.")
    critical: bool = Field(
        default=True, description="A critical benchmark vetoes on its own; it is never averaged away."
    )


class GainResource(StrEnum):
    FILE_SIZE = "fileSize"
    TOKENS_PER_SECOND = "tokensPerSecond"


class RequiredGain(BatonModel):
    """What a candidate must save over the champion, measured in the benchmark run that judges it.

    Non-inferiority alone lets a candidate be as good and no cheaper; a cheaper quantization is
    worth a rollout only if it is measurably cheaper, so the gain is a gate of its own.
    """

    resource: GainResource = Field(
        description=(
            "`fileSize`: the candidate's artifact (`sizeBytes`, pinned with its digest) is smaller; "
            "`tokensPerSecond`: its generation throughput on the benchmark's own items is higher "
            "(paired per item, judged by the lower confidence bound)."
        )
    )
    at_least: float = Field(
        gt=0,
        le=1,
        description="The gain needed, as a share of the champion's value: `0.2` = 20 % smaller or faster.",
    )


class MetricProvider(StrEnum):
    PROMETHEUS = "prometheus"
    IN_PROCESS = "inProcess"


class MetricKind(StrEnum):
    ERROR_RATE = "errorRate"
    LATENCY = "latency"
    VALIDITY = "validity"


class OnlineMetric(BatonModel):
    """A live metric compared between candidate and champion during the canary."""

    model_config = with_rules(
        Rule(
            cel="self.provider != 'prometheus' || has(self.query)",
            holds=lambda self: self.provider != MetricProvider.PROMETHEUS or self.query is not None,
            message="a prometheus metric needs query",
            field_path=".query",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.provider != 'prometheus' || has(self.maxValue) || has(self.tolerance)",
            holds=lambda self: (
                self.provider != MetricProvider.PROMETHEUS
                or self.max_value is not None
                or self.tolerance is not None
            ),
            message=(
                "a prometheus metric needs maxValue or tolerance: it is one reading per arm, judged "
                "against a fixed bound or against the champion's"
            ),
            field_path=".maxValue",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.tolerance) || self.provider == 'prometheus' || self.kind == 'latency'",
            holds=lambda self: (
                self.tolerance is None
                or self.provider == MetricProvider.PROMETHEUS
                or self.kind == MetricKind.LATENCY
            ),
            message=(
                "tolerance on an in-process metric applies to latency only: error rate and validity are "
                "judged on their difference by the sequential test"
            ),
            field_path=".tolerance",
            reason="FieldValueForbidden",
        ),
    )

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Metric name, used in evidence.")
    kind: MetricKind = Field(
        description="`errorRate`, `latency` (seconds) or `validity` (structured output)."
    )
    provider: MetricProvider = Field(
        default=MetricProvider.IN_PROCESS, description="Where the metric comes from."
    )
    query: str | None = Field(
        default=None,
        description="PromQL; `{{revision}}` and `{{deployment}}` are substituted (prometheus provider).",
    )
    max_value: float | None = Field(
        default=None, ge=0, description="Absolute SLO bound for the candidate (e.g. error rate 0.01)."
    )
    tolerance: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description=(
            "Relative bound: the candidate may be at most the champion x (1 + tolerance), both measured "
            "on the same window (`0.2`: at most 20 % slower). Prometheus: the query is run for each "
            "arm's revision at the same evaluation instant, so a range in it (`[5m]`) covers the same "
            "interval; a champion reading that is missing makes the metric Inconclusive. In-process "
            "(latency only): the sequential test's margin as a share of the champion's mean latency "
            "(default 0.2). Error rate and validity are always compared on their difference."
        ),
    )
    critical: bool = Field(default=True, description="A critical metric vetoes on its own.")


class AnalysisSpec(BatonModel):
    """Gates a candidate must pass: sanity, offline benchmarks, online canary metrics."""

    model_config = with_rules(
        Rule(
            cel="!has(self.margin) || self.mode == 'nonInferiority'",
            holds=lambda self: self.margin is None or self.mode == TestMode.NON_INFERIORITY,
            message="margin is only allowed with mode nonInferiority",
            field_path=".margin",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="self.mode != 'nonInferiority' || has(self.margin)",
            holds=lambda self: self.mode != TestMode.NON_INFERIORITY or self.margin is not None,
            message="mode nonInferiority needs margin",
            field_path=".margin",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.requireGain) || size(self.benchmarks) > 0",
            holds=lambda self: self.require_gain is None or bool(self.benchmarks),
            message="requireGain is measured in the benchmark run: it needs benchmarks",
            field_path=".requireGain",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="self.ungated || size(self.benchmarks) > 0 || size(self.metrics) > 0",
            holds=lambda self: self.ungated or bool(self.benchmarks or self.metrics),
            message=(
                "no gate configured: add benchmarks or metrics, or set ungated: true to promote "
                "candidates on time and traffic alone"
            ),
            field_path=".ungated",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!self.ungated || (size(self.benchmarks) == 0 && size(self.metrics) == 0)",
            holds=lambda self: not (self.ungated and (self.benchmarks or self.metrics)),
            message="ungated: true contradicts the configured benchmarks or metrics",
            field_path=".ungated",
            reason="FieldValueForbidden",
        ),
    )

    benchmarks: list[BenchmarkRef] = Field(
        default_factory=list, max_length=16, description="Benchmarks of the offline gate."
    )
    mode: TestMode = Field(
        default=TestMode.SUPERIORITY,
        description="`superiority`: the candidate must be better; `nonInferiority`: not worse than `margin`.",
    )
    margin: float | None = Field(
        default=None, gt=0, le=1, description="Non-inferiority margin on the score scale [0, 1]."
    )
    require_gain: RequiredGain | None = Field(
        default=None,
        description=(
            "A gain the candidate must show in the benchmark run as well as passing the benchmarks "
            "(e.g. a cheaper quantization of the champion's own version judged by `nonInferiority`); "
            "a gain that cannot be measured is Inconclusive."
        ),
    )
    alpha: float = Field(default=0.05, gt=0, le=0.2, description="False-promotion rate the tests control.")
    min_samples: int = Field(
        default=30,
        ge=1,
        le=1_000_000,
        description=(
            "Valid samples each arm needs before a gate may pass (benchmark items; per online metric and "
            "canary step, requests). Fewer valid samples: Inconclusive."
        ),
    )
    max_error_rate: float = Field(
        default=0.05, ge=0, le=1, description="More failed evaluations than this fraction: Inconclusive."
    )
    metrics: list[OnlineMetric] = Field(
        default_factory=list, max_length=16, description="Live metrics checked during the canary."
    )
    ungated: bool = Field(
        default=False,
        description=(
            "Declare that this deployment has no gate (no benchmarks, no metrics): candidates are then "
            "promoted on time and traffic alone. Shown in status and in an Event at each rollout."
        ),
    )


class ReplacementMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class ReplacementPolicy(BatonModel):
    """Whether new candidates start a rollout on their own."""

    mode: ReplacementMode = Field(
        default=ReplacementMode.AUTOMATIC,
        description=(
            "`automatic`: a new candidate starts a rollout; "
            '`manual`: waits for the candidate annotation `baton.dev/approved: "true"`.'
        ),
    )
    candidate_selector: dict[str, str] = Field(
        default_factory=dict, description="Labels a ModelCandidate must carry to be considered (matchLabels)."
    )


class ModelDeploymentSpec(BatonModel):
    """One domain endpoint: which pool, which model, how to replace it."""

    model_config = with_rules(
        Rule(
            cel="self.runtime != 'kserve' || !has(self.structuredOutput)",
            holds=lambda self: self.runtime != Runtime.KSERVE or self.structured_output is None,
            message="structuredOutput needs baton's ingress: runtime llamacpp or vllm, not kserve",
            field_path=".structuredOutput",
            reason="FieldValueForbidden",
        )
    )

    domain: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Domain, e.g. `medical`.")
    pool: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="ModelPool that serves this endpoint."
    )
    model: ModelVersion = Field(description="The initial champion; later champions are recorded in status.")
    runtime: Runtime = Field(default=Runtime.LLAMACPP, description="`llamacpp`, `vllm` or `kserve`.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Engine settings.")
    structured_output: StructuredOutput | None = Field(
        default=None,
        description=(
            "Default JSON schema of the endpoint's answers: chat requests without a `response_format` "
            "are constrained to it and their validity is the online `validity` metric. Not for "
            "`runtime: kserve` (baton's ingress enforces it)."
        ),
    )
    rollout: RolloutStrategy = Field(default_factory=RolloutStrategy, description="Canary strategy.")
    analysis: AnalysisSpec = Field(
        description=(
            "Gates a candidate must pass (required: a deployment without gates must say `ungated: true`)."
        )
    )
    replacement: ReplacementPolicy = Field(
        default_factory=ReplacementPolicy, description="Automatic or manual replacement."
    )


class Phase(StrEnum):
    """Rollout phase of a deployment (or of a candidate)."""

    PENDING = "Pending"
    SERVING = "Serving"
    BENCHMARKING = "Benchmarking"
    CANARY = "Canary"
    PROMOTING = "Promoting"
    BAKING = "Baking"
    PROMOTED = "Promoted"
    REJECTED = "Rejected"
    INCONCLUSIVE = "Inconclusive"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class RevisionStatus(BatonModel):
    """A revision the data plane serves: a model version under a stable revision name."""

    revision: str = Field(description="Revision name in the data plane (`<deployment>-<version>`).")
    version: str = Field(description="Model version.")
    candidate: str | None = Field(default=None, description="ModelCandidate this revision came from, if any.")
    artifact: Artifact = Field(description="The verified artifact.")
    since: str | None = Field(default=None, description="RFC 3339 time this revision took this role.")


class CanaryStatus(BatonModel):
    """Where the canary stands."""

    step: int = Field(ge=0, description="Current step index (0-based).")
    steps: int = Field(ge=1, description="Number of steps.")
    step_started_at: str = Field(description="RFC 3339 time the current step started.")


class ModelDeploymentStatus(BatonModel):
    """What baton observed and decided. Written by the operator only."""

    observed_generation: int | None = Field(
        default=None, description="Generation the status was computed from."
    )
    phase: Phase = Field(default=Phase.PENDING, description="Rollout phase.")
    champion: RevisionStatus | None = Field(default=None, description="The revision serving most traffic.")
    candidate: RevisionStatus | None = Field(default=None, description="The revision under evaluation.")
    previous: RevisionStatus | None = Field(
        default=None,
        description=(
            "While baking: the champion before the promotion, still loaded and mirrored, to roll back to."
        ),
    )
    phase_since: str | None = Field(
        default=None, description="RFC 3339 time the current phase began (progress deadlines count from it)."
    )
    ungated: bool = Field(
        default=False, description="The deployment declares no gate (`spec.analysis.ungated`)."
    )
    canary_weight: int = Field(default=0, ge=0, le=100, description="Percent of traffic on the candidate.")
    canary: CanaryStatus | None = Field(default=None, description="Canary progress.")
    last_decision: Decision | None = Field(default=None, description="The last verdict and its evidence.")
    record: list[Decision] = Field(
        default_factory=list,
        max_length=RECORD_LIMIT,
        description=(
            "Every decision of the current (or last) rollout with its evidence, oldest first: the offline "
            "paired test, each canary step, the bake, the final verdict. Also kept on the ModelCandidate."
        ),
    )
    history: list[Decision] = Field(
        default_factory=list,
        max_length=HISTORY_LIMIT,
        description="Summaries of recent final decisions (without evidence), newest first.",
    )
    endpoint: str | None = Field(
        default=None, description="OpenAI-compatible base URL serving this deployment."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="`Ready`, `Progressing`, `Degraded` with observedGeneration."
    )


class ModelDeployment(Resource):
    kind_name: ClassVar[str] = "ModelDeployment"
    plural: ClassVar[str] = "modeldeployments"
    short_names: ClassVar[tuple[str, ...]] = ("md",)
    description: ClassVar[str] = (
        "A domain endpoint served from a ModelPool, "
        "with its rollout strategy, analysis and replacement policy."
    )
    printer_columns: ClassVar[tuple[PrinterColumn, ...]] = (
        PrinterColumn(name="Domain", type="string", json_path=".spec.domain", description="Domain."),
        PrinterColumn(
            name="Champion",
            type="string",
            json_path=".status.champion.version",
            description="Serving version.",
        ),
        PrinterColumn(
            name="Candidate",
            type="string",
            json_path=".status.candidate.version",
            description="Version on trial.",
        ),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase", description="Rollout phase."),
        PrinterColumn(
            name="Weight",
            type="integer",
            json_path=".status.canaryWeight",
            description="Candidate traffic %.",
        ),
        PrinterColumn(
            name="Decision",
            type="string",
            json_path=".status.lastDecision.reason",
            description="Reason of the last decision.",
            priority=1,
        ),
    )

    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="ModelDeployment.")
    spec: ModelDeploymentSpec = Field(description="What the platform team declares.")
    status: ModelDeploymentStatus | None = Field(default=None, description="Written by the operator.")
