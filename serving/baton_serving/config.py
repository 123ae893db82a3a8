"""The serve configuration of one model pool: the contract between the control plane and the data plane.

The operator renders a `PoolConfig` into a KubeRay `RayService`'s `serveConfigV2` (see
`render_serve_config` below); the laptop shell applies the same rendering to a local
Ray Serve. Every field is described because these types are part of the user documentation.

A pool holds many deployments (one per domain endpoint, e.g. `medical`); a deployment holds
revisions (one model artifact each, e.g. the champion and a candidate) and the traffic weights
between them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

from baton_serving.wire import DIGEST_PATTERN, Quantization

SERVE_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DEFAULT_STICKY_HEADER = "X-Baton-Session"
DEFAULT_MAX_OUTPUT_TOKENS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineKind(StrEnum):
    """Which inference engine runs a revision."""

    LLAMACPP = "llamacpp"
    VLLM = "vllm"


class AdapterRef(_Strict):
    """A LoRA adapter (llama.cpp GGUF) applied over a revision's weights, pinned by its own digest."""

    uri: str = Field(min_length=1, description="Location of the adapter file, as for the artifact's `uri`.")
    digest: str = Field(
        description="Expected content digest of the adapter file, as `sha256:<64 lowercase hex>`. A "
        "mismatch refuses the revision; it never serves.",
        pattern=DIGEST_PATTERN,
    )
    size_bytes: int | None = Field(default=None, ge=1, description="Size of the adapter in bytes.")


class ArtifactRef(_Strict):
    """Where a model's weights live, pinned by content digest."""

    uri: str = Field(
        description="Location of the weights: an absolute local path, `file://` (a mounted volume) "
        "or `http(s)://` URL of a GGUF file; for vLLM a local model directory or file (a hub id "
        "cannot be checked against the digest before vLLM downloads it, and is refused).",
        min_length=1,
    )
    digest: str = Field(
        description="Expected content digest of the artifact file, as `sha256:<64 lowercase hex>` "
        "(of a vLLM model directory: of its `sha256sum` manifest, `baton_serving.artifacts."
        "directory_digest`). A mismatch refuses the revision; it never serves.",
        pattern=DIGEST_PATTERN,
    )
    size_bytes: int | None = Field(
        default=None,
        ge=1,
        description="Size of the artifact in bytes, used to derive replica memory when `resources` "
        "leaves it unset.",
    )
    adapter: AdapterRef | None = Field(
        default=None,
        description="A LoRA adapter llama.cpp applies over these weights (`--lora`); both files are "
        "checked against their digests before llama.cpp opens either. llama.cpp revisions only (a "
        "vLLM revision with one fails to deploy).",
    )


class ReplicaResources(_Strict):
    """Ray resources of one engine replica; unset values are derived from the artifact size."""

    num_cpus: float | None = Field(default=None, ge=0, description="Logical CPUs reserved per replica.")
    num_gpus: float = Field(default=0, ge=0, description="GPUs reserved per replica (vLLM pools).")
    memory_bytes: int | None = Field(
        default=None, ge=1, description="Memory reserved per replica in bytes (Ray `memory` resource)."
    )


class Autoscaling(_Strict):
    """More engine replicas while requests wait, fewer when they stop (Ray Serve autoscaling).

    The revision's `num_replicas` is the fewest it runs; Serve adds replicas up to `max_replicas`
    while the ongoing requests per replica stay above the target. Never below one: a canary under
    analysis keeps its replicas.
    """

    max_replicas: int = Field(ge=1, description="Most engine replicas of the revision.")
    target_ongoing_requests: float | None = Field(
        default=None,
        gt=0,
        description="Ongoing requests per replica Serve scales to (default: half the replica's slots, "
        "`max_ongoing_requests`, so a replica is added before its slots are full).",
    )
    look_back_period_s: float = Field(
        default=30.0, gt=0, description="The window over which the ongoing requests are averaged."
    )
    upscale_delay_s: float = Field(
        default=30.0,
        ge=0,
        description="How long the load must stay above the target before Serve adds replicas.",
    )
    downscale_delay_s: float = Field(
        default=600.0,
        ge=0,
        description="How long the load must stay below the target before Serve removes replicas.",
    )


class RevisionSpec(_Strict):
    """One servable model version of a deployment: an artifact plus how to run it."""

    name: str = Field(
        description="Revision name, unique within its deployment (e.g. `v2` or a candidate name). "
        "Lowercase DNS label.",
        pattern=SERVE_NAME_PATTERN,
    )
    artifact: ArtifactRef = Field(description="The weights, pinned by digest.")
    engine: EngineKind = Field(default=EngineKind.LLAMACPP, description="Inference engine.")
    quantization: Quantization = Field(default=Quantization.Q4_K_M, description="Weight format.")
    context_length: int = Field(
        default=2048, ge=16, description="Context window in tokens (prompt plus completion)."
    )
    threads: int = Field(
        default=1, ge=1, description="CPU threads llama.cpp uses for decoding in one replica."
    )
    num_replicas: int = Field(
        default=1, ge=1, description="Engine replicas of this revision; the fewest with `autoscaling`."
    )
    max_ongoing_requests: int = Field(
        default=16, ge=1, description="Requests one replica accepts before Serve queues them."
    )
    resources: ReplicaResources = Field(
        default_factory=ReplicaResources, description="Per-replica resources (derived when unset)."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Replicas between `num_replicas` and a maximum, by load; unset: fixed."
    )

    @model_validator(mode="after")
    def _replica_bounds(self) -> RevisionSpec:
        if self.autoscaling is not None and self.autoscaling.max_replicas < self.num_replicas:
            raise ValueError("autoscaling.max_replicas: less than num_replicas (the fewest replicas)")
        return self

    @property
    def most_replicas(self) -> int:
        """The replicas the revision may run at once (what memory must be reserved for)."""
        return self.autoscaling.max_replicas if self.autoscaling is not None else self.num_replicas

    def serve_replica_options(self) -> dict[str, Any]:
        """Ray Serve's replica count options: `num_replicas`, or an `autoscaling_config` from it."""
        if self.autoscaling is None:
            return {"num_replicas": self.num_replicas}
        scaling = self.autoscaling
        target = scaling.target_ongoing_requests or max(1.0, self.max_ongoing_requests / 2)
        return {
            "autoscaling_config": {
                "min_replicas": self.num_replicas,
                "initial_replicas": self.num_replicas,
                "max_replicas": scaling.max_replicas,
                "target_ongoing_requests": target,
                "look_back_period_s": scaling.look_back_period_s,
                "upscale_delay_s": scaling.upscale_delay_s,
                "downscale_delay_s": scaling.downscale_delay_s,
            }
        }


class RoutePolicy(_Strict):
    """How a deployment's traffic is split across its revisions. Changes apply without restarts."""

    weights: dict[str, float] = Field(
        description="Traffic weight per revision name (any non-negative numbers; normalised). "
        "Revisions left out get no traffic but stay reachable with `X-Baton-Revision`.",
    )
    shadow: str | None = Field(
        default=None,
        description="Revision that receives a copy of every request; its answer is recorded and "
        "scored against the primary answer, never returned.",
    )
    sticky_header: str = Field(
        default=DEFAULT_STICKY_HEADER,
        description="Request header whose value pins a client session to one revision while the "
        "weights stay the same.",
        min_length=1,
    )

    @model_validator(mode="after")
    def _weights_are_usable(self) -> RoutePolicy:
        negative = sorted(name for name, weight in self.weights.items() if weight < 0)
        if negative:
            raise ValueError(f"weights: negative weight for revision(s) {negative}")
        if sum(self.weights.values()) <= 0:
            raise ValueError("weights: at least one revision needs a positive weight")
        return self


class EndpointContract(_Strict):
    """What a deployment promises its clients whichever revision answers; the ingress enforces it.

    Part of the routing table, so changing it reaches the running ingress without a restart.
    """

    max_output_tokens: int = Field(
        default=DEFAULT_MAX_OUTPUT_TOKENS,
        ge=1,
        description="Most output tokens a client may ask for: a larger `max_tokens` (or "
        "`max_completion_tokens`) is refused with 400, never clamped, so a client never gets a "
        "shorter answer than it asked for without being told. A request that asks for none gets "
        "this many, at most half the context window.",
    )
    default_json_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema that constrains the answer to every chat request without a "
        "`response_format` (a client's own `response_format` wins, `text` included); such answers "
        "count in the structured-output validity metric against it.",
    )


class DeploymentSpec(EndpointContract):
    """One domain endpoint: the OpenAI `model` name clients use, and the revisions behind it."""

    name: str = Field(
        description="Deployment name; clients send it as the OpenAI `model` (e.g. `medical`).",
        pattern=SERVE_NAME_PATTERN,
    )
    revisions: list[RevisionSpec] = Field(
        description="All revisions that run for this endpoint.", min_length=1
    )
    route: RoutePolicy = Field(description="Traffic split, stickiness and shadowing.")

    @model_validator(mode="after")
    def _route_names_known_revisions(self) -> DeploymentSpec:
        names = [revision.name for revision in self.revisions]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"revisions: duplicate revision name(s) {duplicates}")
        unknown = sorted(set(self.route.weights) - set(names))
        if unknown:
            raise ValueError(f"route.weights: unknown revision(s) {unknown}; known: {names}")
        if self.route.shadow is not None and self.route.shadow not in names:
            raise ValueError(f"route.shadow: unknown revision {self.route.shadow!r}; known: {names}")
        return self

    def revision(self, name: str) -> RevisionSpec:
        return next(revision for revision in self.revisions if revision.name == name)


class TracingConfig(_Strict):
    """OpenTelemetry traces of inference requests (GenAI semantic conventions)."""

    enabled: bool = Field(default=False, description="Record one span per inference request.")
    otlp_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces endpoint (e.g. `http://otel-collector:4318/v1/traces`); "
        "needs the `opentelemetry-exporter-otlp-proto-http` package.",
    )
    jsonl_path: str | None = Field(
        default=None, description="Append finished spans as JSON lines to this file (local debugging)."
    )
    record_content: bool = Field(
        default=False,
        description="Also record prompts and completions on spans. Off by default: they may hold "
        "personal or confidential data.",
    )


class RequestLimits(_Strict):
    """Bounds on what one client request may ask of a pool. Past a bound the request is refused with
    a 4xx in OpenAI's error shape naming the field, before any engine works on it: a multi-tenant
    endpoint must not let one caller's request cost the others (or fail with a 500)."""

    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body in bytes; a larger one is refused with 413 before it is "
        "parsed. It also bounds every string, array and prompt in the request.",
    )
    max_json_depth: int = Field(
        default=64,
        ge=8,
        description="Deepest nesting of objects and arrays in a request body (a response schema included).",
    )
    max_messages: int = Field(default=512, ge=1, description="Most messages in one chat request.")
    max_stop_sequences: int = Field(
        default=4, ge=0, description="Most stop sequences in one request (OpenAI allows 4)."
    )
    max_stop_chars: int = Field(default=256, ge=1, description="Longest stop sequence, in characters.")
    max_schema_depth: int = Field(
        default=24,
        ge=2,
        description="Deepest nesting of objects and arrays in a `response_format` JSON schema.",
    )
    max_schema_bytes: int = Field(
        default=65_536,
        ge=256,
        description="Largest `response_format` JSON schema, in bytes of compact JSON.",
    )
    grammar_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="Longest an engine spends turning one response schema into a grammar (in a "
        "child process, stopped at the deadline); a slower schema is refused with 400.",
    )
    max_grammar_bytes: int = Field(
        default=262_144,
        ge=1024,
        description="Largest grammar a response schema may become, in bytes of GBNF; llama.cpp "
        "parses and applies it at every decoding step.",
    )
    max_grammar_nesting: int = Field(
        default=256,
        ge=8,
        description="Deepest nesting of groups in that grammar: llama.cpp's grammar parser recurses "
        "once per level, and a schema bound such as `maxLength: 100000` becomes that many levels.",
    )


class FetchPolicy(BaseModel):
    """What URLs and local paths baton may read on a user's behalf (benchmark items, release
    indexes and directories, model artifacts)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schemes: list[Literal["https", "http"]] = Field(
        default_factory=lambda: ["https"], description="URL schemes that may be fetched."
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="Host names a URL may name (`*.example.com` matches its subdomains); "
        "empty: any host, as long as its addresses pass the address check.",
    )
    allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        alias="allowedNetworks",
        description="Networks that may be reached although they are not public (e.g. `10.0.0.0/8` for "
        "an in-cluster mirror, `127.0.0.0/8` for a test). Otherwise loopback, link-local (the cloud "
        "metadata endpoint 169.254.169.254), private, shared, reserved and multicast addresses are refused.",
    )
    local_roots: list[str] = Field(
        default_factory=list,
        alias="localRoots",
        description="Directories under which local paths and `file://` URIs may be read (symlinks are "
        "resolved first, `..` is refused); empty: no local reads.",
    )
    max_redirects: int = Field(
        default=3, ge=0, le=10, alias="maxRedirects", description="Redirects followed, each checked again."
    )


DEFAULT_KEYS_DIR = "/etc/baton/api-keys"


class AuthConfig(_Strict):
    """Who may call the pool's client endpoints: API keys from a directory (see `baton_serving.auth`)."""

    enabled: bool = Field(
        default=True,
        description="Require `Authorization: Bearer <key>` on every client endpoint. Off only for "
        "loopback use (`baton up --no-auth`): then anyone who reaches the port may call and pin.",
    )
    keys_dir: str = Field(
        default=DEFAULT_KEYS_DIR,
        description="Directory of key files, one JSON key per file named by its key id (a mounted "
        "Kubernetes Secret, or the key file `baton up` writes). Missing: every request is refused.",
    )
    reload_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often the directory is read again, so added, rotated or removed keys "
        "apply without a restart (the kubelet updates a mounted Secret in place).",
    )


class PoolConfig(_Strict):
    """Everything one Ray Serve pool runs: its domain deployments and observability settings."""

    pool: str = Field(description="Pool name; a label on every metric.", pattern=SERVE_NAME_PATTERN)
    deployments: list[DeploymentSpec] = Field(description="Domain endpoints served by this pool.")
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="Request tracing.")
    artifact_cache_dir: str | None = Field(
        default=None,
        description="Where downloaded artifacts are cached (default `$BATON_CACHE/models`, "
        "`~/.cache/baton/models`).",
    )
    ingress_replicas: int = Field(default=1, ge=1, description="Replicas of the OpenAI ingress.")
    limits: RequestLimits = Field(
        default_factory=RequestLimits,
        description="Bounds on client requests. Changing them restarts the ingress and engine replicas.",
    )
    fetch: FetchPolicy = Field(
        default_factory=FetchPolicy,
        description="Which URLs and local roots artifacts may be read from (the operator's own policy).",
    )
    auth: AuthConfig = Field(
        default_factory=AuthConfig,
        description="API keys and their quotas. Changing this restarts the ingress replicas.",
    )

    @model_validator(mode="after")
    def _unique_deployments(self) -> PoolConfig:
        names = [deployment.name for deployment in self.deployments]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"deployments: duplicate deployment name(s) {duplicates}")
        return self

    def deployment(self, name: str) -> DeploymentSpec:
        return next(deployment for deployment in self.deployments if deployment.name == name)


def engine_app_name(deployment: str, revision: str) -> str:
    """The Serve application that runs one revision's engine (names are DNS labels: a dot is unambiguous)."""
    return f"{deployment}.{revision}"


class RevisionRoute(_Strict):
    """What the ingress needs to know about one revision to route and validate requests."""

    name: str = Field(description="Revision name.", pattern=SERVE_NAME_PATTERN)
    engine: EngineKind = Field(description="Inference engine of the revision.")
    context_length: int = Field(ge=16, description="Context window in tokens.")
    digest: str | None = Field(
        default=None, pattern=DIGEST_PATTERN, description="Digest of the artifact (model listings show it)."
    )
    quantization: Quantization | None = Field(default=None, description="Weight format of the artifact.")
    size_bytes: int | None = Field(default=None, ge=1, description="Size of the artifact in bytes.")


class DeploymentRoute(EndpointContract):
    """Routing state of one deployment, delivered to the ingress as part of its `user_config`."""

    name: str = Field(description="Deployment name (the OpenAI `model`).", pattern=SERVE_NAME_PATTERN)
    revisions: list[RevisionRoute] = Field(description="Revisions running for this deployment.")
    route: RoutePolicy = Field(description="Traffic split, stickiness and shadowing.")


class RouteTable(_Strict):
    """The ingress `user_config`: every routing decision input that may change without a restart."""

    deployments: list[DeploymentRoute] = Field(description="One entry per deployment of the pool.")


def route_table(pool: PoolConfig) -> RouteTable:
    """The part of a pool config that Ray Serve delivers to the running ingress via `reconfigure`."""
    return RouteTable(
        deployments=[
            DeploymentRoute(
                name=deployment.name,
                revisions=[
                    RevisionRoute(
                        name=r.name,
                        engine=r.engine,
                        context_length=r.context_length,
                        digest=r.artifact.digest,
                        quantization=r.quantization,
                        size_bytes=r.artifact.size_bytes,
                    )
                    for r in deployment.revisions
                ],
                route=deployment.route,
                max_output_tokens=deployment.max_output_tokens,
                default_json_schema=deployment.default_json_schema,
            )
            for deployment in pool.deployments
        ]
    )


# ---------------------------------------------------------------------------------------------
# The `serveConfigV2` rendering. Ray-free on purpose: the operator renders pools without loading Ray.

# Ray Serve's documented low-overhead settings (what `RAY_SERVE_THROUGHPUT_OPTIMIZED` turns on), one
# by one, for every Ray process of a pool, Serve's HTTP proxy included (it costs most of a request's
# time on the Ray path, docs/serving.md): user code and the handle router share the event loop (every
# replica here is fully async, so it is safe), Serve's own calls go over gRPC, access logs are
# buffered. Not the umbrella flag: it also turns on "direct ingress", an HTTP port of its own in
# every replica, engines included, beside the proxy's, which no NetworkPolicy or key rule expects.
SERVE_PROCESS_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    "RAY_SERVE_LOG_TO_STDERR": "0",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
}

INGRESS_APP = "baton"
INGRESS_DEPLOYMENT = "OpenAIIngress"
ENGINE_DEPLOYMENT = "EngineServer"


class IngressArgs(_Strict):
    """Builder arguments of the ingress application: only what needs a restart to change."""

    pool: str = Field(description="Pool name; a label on every metric.")
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="Request tracing.")
    ingress_replicas: int = Field(default=1, ge=1, description="Replicas of the ingress.")
    limits: RequestLimits = Field(default_factory=RequestLimits, description="Bounds on client requests.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys and their quotas.")


class EngineArgs(_Strict):
    """Builder arguments of one revision's engine application."""

    deployment: str = Field(description="Deployment the revision belongs to.")
    revision: RevisionSpec = Field(description="The revision to load.")
    artifact_cache_dir: str | None = Field(default=None, description="Download cache for artifacts.")
    limits: RequestLimits = Field(
        default_factory=RequestLimits, description="Bounds on client requests (the grammar ones apply here)."
    )
    fetch: FetchPolicy = Field(
        default_factory=FetchPolicy, description="Where the artifact may be read from."
    )


def render_serve_config(pool: PoolConfig) -> dict[str, Any]:
    """The `serveConfigV2` body for a pool: the ingress application plus one engine app per revision.

    Weights live only in the ingress deployment's `user_config`, never in builder `args`: Serve
    hashes `args` into the code version, and a new code version would restart every replica.
    """
    ingress_args = IngressArgs(
        pool=pool.pool,
        tracing=pool.tracing,
        ingress_replicas=pool.ingress_replicas,
        limits=pool.limits,
        auth=pool.auth,
    )
    applications: list[dict[str, Any]] = [
        {
            "name": INGRESS_APP,
            "route_prefix": "/",
            "import_path": "baton_serving.app:build_ingress_app",
            "args": ingress_args.model_dump(mode="json"),
            "deployments": [
                {"name": INGRESS_DEPLOYMENT, "user_config": route_table(pool).model_dump(mode="json")}
            ],
        }
    ]
    for deployment in pool.deployments:
        for revision in deployment.revisions:
            engine_args = EngineArgs(
                deployment=deployment.name,
                revision=revision,
                artifact_cache_dir=pool.artifact_cache_dir,
                limits=pool.limits,
                fetch=pool.fetch,
            )
            applications.append(
                {
                    "name": engine_app_name(deployment.name, revision.name),
                    "route_prefix": None,
                    "import_path": "baton_serving.app:build_engine_app",
                    "args": engine_args.model_dump(mode="json"),
                }
            )
    return {"applications": applications}
