"""The Ray Serve applications of a model pool, and how a rendered Serve config reaches a local Serve.

A pool is several Serve applications, so each one can change without touching the others:

- `baton` (route `/`): the OpenAI-compatible ingress. Its routing table (weights, shadow,
  stickiness) is its `user_config`, so Serve applies weight changes through `reconfigure` on the
  running replica: nothing restarts, no request fails.
- one engine application per revision (`<deployment>.<revision>`, no HTTP route): the loaded model.
  Adding a candidate adds an application; the champion's replicas are not rebuilt.

`baton_serving.config.render_serve_config` (Ray-free, so the operator need not load Ray) gives the
`serveConfigV2` body that the operator puts into a KubeRay `RayService`; `apply_serve_config` here
applies the same body to a local Ray Serve (laptop and tests), through the declarative path KubeRay
uses, so both behave the same way.
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jsonschema import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.handle import DeploymentHandle

from baton_serving import metrics, ollama_protocol
from baton_serving.artifacts import MAX_ARTIFACT_BYTES, ArtifactError, fetch_verified
from baton_serving.auth import AuthError, Caller
from baton_serving.config import (
    ENGINE_DEPLOYMENT,
    INGRESS_DEPLOYMENT,
    SERVE_PROCESS_ENV,
    AdapterRef,
    ArtifactRef,
    AuthConfig,
    DeploymentRoute,
    EngineArgs,
    EngineKind,
    FetchPolicy,
    IngressArgs,
    RequestLimits,
    RevisionRoute,
    RevisionSpec,
    RouteTable,
    TracingConfig,
    engine_app_name,
)
from baton_serving.engines import (
    DECODE_AFTER_FIRST_TOKEN_KEY,
    Engine,
    EngineRequestError,
    EngineUnavailableError,
    GenerationRequest,
)
from baton_serving.fetch import shown
from baton_serving.gate import Gate
from baton_serving.ollama_protocol import (
    OLLAMA_VERSION,
    OllamaChatRequest,
    OllamaFraming,
    OllamaGenerateRequest,
    OllamaShowRequest,
    parse_ollama,
)
from baton_serving.openai_protocol import (
    Answer,
    ChatCompletionRequest,
    CompletionRequest,
    Framing,
    OpenAIError,
    OpenAIFraming,
    Timing,
    check_response_schema,
    openai_framing,
    parse_request,
)
from baton_serving.patterns import linear_validator
from baton_serving.resources import replica_actor_options
from baton_serving.router import NoServableRevisionError, Router
from baton_serving.tracing import RequestTracer
from baton_serving.wire import (
    METRICS_PATH,
    REVISION_HEADER,
    REVISIONS_PATH,
    SHADOW_ENDPOINT,
    is_client_error,
)

logger = logging.getLogger("baton_serving")

INGRESS_NUM_CPUS = 0.25
STATUS_PROBE_INTERVAL_S = 0.5
STATUS_PROBE_TIMEOUT_S = 10.0
STATUS_RECHECK_INTERVAL_S = 5.0
# How long `reconfigure` waits for the first status of newly routed revisions (see there).
FIRST_STATUS_WAIT_S = 5.0
STREAM_BATCH_INTERVAL_S = 0.02
# How often the ingress may ask the GCS for the cluster's Ray nodes, for a scrape addressed to an IP
# address it does not know (a Service's, or a node that joined since it last asked).
NODE_IPS_REFRESH_S = 5.0


# ---------------------------------------------------------------------------------------------
# Engine replicas


class _StreamEnd:
    pass


@dataclass(frozen=True)
class _StreamFailure:
    error: BaseException


def _has_output(chunk: dict[str, Any]) -> bool:
    """Whether a stream chunk carries generated text or ends the choice (not just the role)."""
    if not chunk["choices"]:
        return True
    choice = chunk["choices"][0]
    return bool(
        (choice.get("delta") or {}).get("content") or choice.get("text") or choice.get("finish_reason")
    )


@serve.deployment(name=ENGINE_DEPLOYMENT, health_check_period_s=10)
class EngineServer:
    """One revision's loaded model. A refused artifact leaves the replica up but never serving."""

    def __init__(
        self,
        deployment: str,
        revision: dict[str, Any],
        artifact_cache_dir: str | None,
        limits: dict[str, Any],
        fetch: dict[str, Any],
    ) -> None:
        from baton_serving.engines.llamacpp import LlamaCppEngine

        spec = RevisionSpec.model_validate(revision)
        self._name = f"{deployment}/{spec.name}"
        self._engine: LlamaCppEngine | None = None
        self._error: str | None = None
        self._artifact_seconds: float | None = None
        uri = spec.artifact.uri
        began = time.monotonic()
        try:
            policy = FetchPolicy.model_validate(fetch)
            cache = Path(artifact_cache_dir) if artifact_cache_dir else None

            def verified(ref: ArtifactRef | AdapterRef) -> Path:
                cap = ref.size_bytes or MAX_ARTIFACT_BYTES  # a download longer than declared is cut off
                return fetch_verified(ref.uri, ref.digest, policy, cache, cap).path

            artifact_path = verified(spec.artifact)
            # An adapter is a file of its own, held to its own pin before llama.cpp opens either.
            adapter_path = verified(spec.artifact.adapter) if spec.artifact.adapter else None
            # Downloaded and verified, or (from the cache) verified again: what a replica's start pays.
            self._artifact_seconds = round(time.monotonic() - began, 3)
            # One slot per request the replica accepts: every accepted request decodes at once.
            self._engine = LlamaCppEngine(
                artifact_path,
                spec.context_length,
                spec.threads,
                slots=spec.max_ongoing_requests,
                limits=RequestLimits.model_validate(limits),
                adapter=adapter_path,
            )
        except ArtifactError as error:
            self._error = str(error)
        except ValueError as error:  # llama-server exited or timed out while loading the file
            self._error = f"{shown(uri)}: llama.cpp could not load the model: {error}"
        if self._error:
            logger.error("revision %s refused: %s", self._name, self._error)

    def __del__(self) -> None:
        # Serve calls this when it stops the replica; PR_SET_PDEATHSIG covers a killed one.
        if getattr(self, "_engine", None) is not None:
            self._engine.close()

    async def status(self) -> dict[str, Any]:
        """Whether it serves (or why not), which replica answered, and how its llama-server fares."""
        context = serve.get_replica_context()
        status: dict[str, Any] = {
            "ready": self._engine is not None,
            "error": self._error,
            "pid": os.getpid(),
            "replica_id": context.replica_id.unique_id,
            "artifact_seconds": self._artifact_seconds,
        }
        if self._engine is not None:
            status["restarts"] = self._engine.restarts  # how often its llama-server died
            with contextlib.suppress(EngineUnavailableError):  # restarting: no slot figures this time
                status["slots"] = {"total": self._engine.slots, **await self._engine.slot_usage()}
        return status

    def _loaded(self) -> Engine:
        if self._engine is None:
            raise EngineUnavailableError(f"revision {self._name} is not serving: {self._error}")
        return self._engine

    async def generate(self, request: GenerationRequest) -> dict[str, Any]:
        return await self._loaded().generate(request)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[list[dict[str, Any]]]:
        """Chunks in batches: the first token at once, then what decoding produced every 20 ms."""
        engine = self._loaded()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def decode() -> None:
            try:
                async for chunk in engine.stream(request):
                    queue.put_nowait(chunk)
            except Exception as error:
                queue.put_nowait(_StreamFailure(error))
            finally:
                queue.put_nowait(_StreamEnd())

        decoding = asyncio.create_task(decode())
        held: list[dict[str, Any]] = []  # a leading role-only chunk waits for the first token
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                held.extend(item for item in items if isinstance(item, dict))
                finished = any(not isinstance(item, dict) for item in items)
                if held and (finished or any(_has_output(chunk) for chunk in held)):
                    yield held
                    held = []
                    if not finished:
                        # The first token went at once; the next ones gather for a moment (or until
                        # decoding ends), so one message carries several tokens and sending does
                        # not compete with decoding.
                        await asyncio.wait([decoding], timeout=STREAM_BATCH_INTERVAL_S)
                for item in items:
                    if isinstance(item, _StreamFailure):
                        raise item.error
                    if isinstance(item, _StreamEnd):
                        return
        finally:
            decoding.cancel()  # a client gone mid-stream: the request to llama-server closes, its slot frees


# ---------------------------------------------------------------------------------------------
# Ingress


@dataclass
class _LiveDeployment:
    router: Router
    revisions: dict[str, RevisionRoute]
    contract: DeploymentRoute
    # Why the deployment's default response schema cannot be used, if it cannot (checked once per
    # routing table, with the bounds a client's schema gets).
    schema_refusal: str | None = None

    def generation(self, body: ChatCompletionRequest | CompletionRequest, revision: str) -> GenerationRequest:
        generation = body.generation(self.contract, self.revisions[revision].context_length)
        relies_on_default = isinstance(body, ChatCompletionRequest) and body.response_format is None
        if self.schema_refusal is not None and relies_on_default:
            # The deployment's configuration is at fault, not the client: a 5xx, on every revision alike.
            raise OpenAIError(
                500,
                f"the deployment's default response schema is refused: {self.schema_refusal}",
                error_type=metrics.SERVER_ERROR,
            )
        return generation


def _schema_refusal(deployment: DeploymentRoute, limits: RequestLimits) -> str | None:
    if deployment.default_json_schema is None:
        return None
    try:
        check_response_schema(deployment.default_json_schema, limits)
    except ValueError as error:
        logger.error("deployment %s: default response schema refused: %s", deployment.name, error)
        return str(error)
    return None


@dataclass(frozen=True)
class _InFlight:
    """A routed request on its way through an engine: what recording and framing its end needs."""

    labels: tuple[str, str, str]
    endpoint: str
    started: float
    generation: GenerationRequest
    span: Any
    live: _LiveDeployment
    framing: Framing


@dataclass(frozen=True)
class _EngineHandles:
    unary: DeploymentHandle
    streaming: DeploymentHandle

    @classmethod
    def of(cls, app_name: str) -> "_EngineHandles":
        """Handles of one engine application; KeyError until Serve has built it."""
        unary = serve.get_deployment_handle(ENGINE_DEPLOYMENT, app_name=app_name)
        # `.options()` builds a new handle: done once here, not per request.
        return cls(unary, unary.options(stream=True))


@dataclass(frozen=True)
class _Parsed:
    """A request as the shared path takes it, whichever wire format it came in."""

    model: str  # the deployment
    body: ChatCompletionRequest | CompletionRequest | None  # None: Ollama's "load the model"
    framing: Framing


@dataclass(frozen=True)
class _Dialect:
    """One inference route: its `endpoint` metric label, its parser, and how it frames early errors."""

    endpoint: str
    parse: Callable[[bytes, RequestLimits], _Parsed]
    errors: Framing


def _openai_parser(wire: type[ChatCompletionRequest | CompletionRequest]) -> Callable[..., _Parsed]:
    def parse(raw: bytes, limits: RequestLimits) -> _Parsed:
        body = parse_request(raw, wire, limits)
        return _Parsed(body.model, body, openai_framing(body))

    return parse


def _ollama_parser(wire: type[OllamaChatRequest | OllamaGenerateRequest]) -> Callable[..., _Parsed]:
    kind = "chat" if wire is OllamaChatRequest else "generate"

    def parse(raw: bytes, limits: RequestLimits) -> _Parsed:
        request = parse_ollama(raw, wire, limits)
        framing = OllamaFraming(kind, request.wire.model, request.wire.stream)
        return _Parsed(ollama_protocol.deployment_of(request.wire.model), request.openai, framing)

    return parse


OPENAI_CHAT = _Dialect("chat_completions", _openai_parser(ChatCompletionRequest), OpenAIFraming())
OPENAI_COMPLETIONS = _Dialect("completions", _openai_parser(CompletionRequest), OpenAIFraming())
OLLAMA_CHAT = _Dialect("ollama_chat", _ollama_parser(OllamaChatRequest), OllamaFraming("chat"))
OLLAMA_GENERATE = _Dialect(
    "ollama_generate", _ollama_parser(OllamaGenerateRequest), OllamaFraming("generate")
)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class _Progress:
    """What a decoding stream has produced so far, and when its first token came."""

    started: float
    arrived: str
    pieces: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    finish_reasons: list[str] = field(default_factory=list)
    first_token_at: float | None = None

    def add(self, chunk: dict[str, Any]) -> None:
        if not chunk["choices"]:
            self.usage = chunk.get("usage") or {}
            return
        text = _chunk_text(chunk)
        if text and self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.pieces.append(text)
        if chunk["choices"][0].get("finish_reason"):
            self.finish_reasons.append(chunk["choices"][0]["finish_reason"])

    def answer(self) -> Answer:
        return Answer("".join(self.pieces), self.usage, self.finish_reasons)

    def timing(self, finished: float) -> Timing:
        first = self.first_token_at or finished
        return Timing(
            created_at=self.arrived,
            total_ns=int((finished - self.started) * 1e9),
            prompt_eval_ns=int((first - self.started) * 1e9),
            eval_ns=int((finished - first) * 1e9),
        )


fastapi_app = FastAPI(title="baton", docs_url=None, redoc_url=None, openapi_url=None)


def _error_response(framing: Framing, error: OpenAIError) -> JSONResponse:
    return JSONResponse(framing.error_body(error), status_code=error.status, headers=error.headers)


def _refused(refusal: AuthError) -> OpenAIError:
    """A door refusal in OpenAI's shape: 401 with `WWW-Authenticate`, 429 with `Retry-After`."""
    headers = {"WWW-Authenticate": "Bearer"} if refusal.status == 401 else {}
    if refusal.retry_after_s is not None:
        headers["Retry-After"] = str(refusal.retry_after_s)
    error_type = "requests" if refusal.status == 429 else "invalid_request_error"
    return OpenAIError(refusal.status, refusal.message, error_type, code=refusal.code, headers=headers)


async def _released_after(body: AsyncIterator[Any], release: Callable[[], None]) -> AsyncIterator[Any]:
    """A streamed body that gives its key's concurrency slot back once it ends (or is abandoned)."""
    try:
        async for part in body:
            yield part
    finally:
        release()


def _as_openai_error(error: BaseException) -> OpenAIError:
    """Map an engine-side exception (Ray wraps it; the cause keeps its class) to an HTTP error."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, EngineRequestError):
        return OpenAIError(400, str(cause), param=cause.param)
    if isinstance(cause, EngineUnavailableError):
        return OpenAIError(503, str(cause), error_type="service_unavailable")
    return OpenAIError(500, f"the engine failed: {type(cause).__name__}", error_type=metrics.SERVER_ERROR)


def _unary_first_token_at(result: dict[str, Any]) -> float | None:
    """When a unary answer's first token came, as seen at the ingress: now, less the time the engine
    says it decoded after that token (taken off the response). So the answer's way back through Ray
    counts in its time to first token, which is a little longer than a streamed one's, never shorter.
    None when the engine does not say (no token generated, or an engine without timings)."""
    after_first = result.pop(DECODE_AFTER_FIRST_TOKEN_KEY, None)
    return None if after_first is None else time.perf_counter() - after_first


def _answer_text(result: dict[str, Any]) -> str:
    choice = result["choices"][0]
    return choice["message"].get("content") or "" if "message" in choice else choice.get("text", "")


def _chunk_text(chunk: dict[str, Any]) -> str:
    choice = chunk["choices"][0]
    return (choice.get("delta") or {}).get("content") or "" if "delta" in choice else choice.get("text") or ""


def _structured_output_valid(text: str, schema: dict[str, Any]) -> bool:
    try:
        linear_validator(schema).validate(json.loads(text))
    except (ValueError, RecursionError, ValidationError):  # not JSON, too deep, or not the schema's
        return False
    return True


async def _read_body(http: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise OpenAIError(413, f"request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            raise OpenAIError(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name=INGRESS_DEPLOYMENT, max_ongoing_requests=256, health_check_period_s=10)
@serve.ingress(fastapi_app)
class OpenAIIngress:
    """OpenAI-compatible HTTP front of a pool: validates, routes, records, streams."""

    def __init__(
        self,
        pool: str,
        tracing: dict[str, Any],
        limits: dict[str, Any],
        auth: dict[str, Any],
        replicas: int = 1,
    ) -> None:
        self._pool = pool
        self._gate = Gate(pool, AuthConfig.model_validate(auth), replicas)
        self._limits = RequestLimits.model_validate(limits)
        # Parsing and JSON-schema checks of client requests (and of structured answers) are CPU work
        # on client-chosen input: they run here, never on the event loop that serves every request.
        self._cpu = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingress-cpu")
        self._tracer = RequestTracer(TracingConfig.model_validate(tracing), pool)
        self._deployments: dict[str, _LiveDeployment] = {}
        # Each deployment's route and when it last changed (Ollama's `modified_at`).
        self._routes: dict[str, tuple[DeploymentRoute, str]] = {}
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._probes: dict[tuple[str, str], asyncio.Task] = {}
        self._answered: dict[tuple[str, str], asyncio.Event] = {}
        self._engines: dict[tuple[str, str], _EngineHandles] = {}
        self._background: set[asyncio.Task] = set()
        directory = os.environ.get(metrics.MULTIPROC_ENV)
        if directory:
            metrics.prepare_multiprocess_dir(Path(directory))
        self._node_ip = ip_address(ray.util.get_node_ip_address())
        self._node_ips: frozenset[IPv4Address | IPv6Address] = frozenset()
        self._node_ips_read = -NODE_IPS_REFRESH_S

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Ray Serve delivers a new routing table here; engine replicas are left alone."""
        table = RouteTable.model_validate(user_config)
        live: dict[str, _LiveDeployment] = {}
        for deployment in table.deployments:
            for revision in deployment.revisions:
                self._watch((deployment.name, revision.name))
            live[deployment.name] = _LiveDeployment(
                router=Router(deployment.name, deployment.route),
                revisions={revision.name: revision for revision in deployment.revisions},
                contract=deployment,
                schema_refusal=_schema_refusal(deployment, self._limits),
            )
        self._deployments = live
        applied = _rfc3339(datetime.now(UTC))
        self._routes = {
            route.name: self._routes[route.name]
            if route.name in self._routes and self._routes[route.name][0] == route
            else (route, applied)
            for route in table.deployments
        }
        current = {(d, r) for d, deployment in live.items() for r in deployment.revisions}
        for key in set(self._status) - current:
            self._status.pop(key)
            self._answered.pop(key, None)
            self._engines.pop(key, None)
            probe = self._probes.pop(key, None)
            if probe is not None:
                probe.cancel()
        await self._first_statuses(
            [
                (deployment.name, name)
                for deployment in table.deployments
                for name, weight in deployment.route.weights.items()
                if weight > 0
            ]
        )
        logger.info("routing table applied: %s", {d: dep.router.policy.weights for d, dep in live.items()})

    def _watch(self, key: tuple[str, str]) -> None:
        """Start probing a revision that this routing table names for the first time."""
        if key in self._status:  # already known from an earlier routing table
            return
        self._status[key] = {"ready": False, "error": None}
        self._answered[key] = asyncio.Event()
        self._probes[key] = asyncio.create_task(self._probe(key))

    async def _first_statuses(self, keys: list[tuple[str, str]]) -> None:
        """Wait (bounded) until each of `keys` has answered its first status probe.

        Serve sends a replica traffic as soon as its first `reconfigure` returns. Without this
        wait a new ingress replica (a restart, a scale-up) would answer 503 "no ready revision"
        for revisions that have been serving for minutes, until its probes came back.
        """
        events = [self._answered[key] for key in keys if key in self._answered]
        waiters = [asyncio.create_task(event.wait()) for event in events if not event.is_set()]
        if not waiters:
            return
        _, pending = await asyncio.wait(waiters, timeout=FIRST_STATUS_WAIT_S)
        for waiter in pending:
            waiter.cancel()

    async def _probe(self, key: tuple[str, str]) -> None:
        """Watch the engine: route to it once it has loaded, never while it refuses its artifact.

        Polled every 0.5 s until it settles, then every 5 s, so an engine application that Serve
        replaced (a fixed artifact, a crashed replica that came back refusing) is noticed. The
        handles are made here, not in `reconfigure`: Serve builds applications asynchronously, so
        the routing table may name an engine application that does not exist yet.
        """
        ready_gauge = metrics.REVISION_READY.labels(self._pool, *key)
        ready_gauge.set(0)
        handles: _EngineHandles | None = None
        while True:
            try:
                handles = handles or _EngineHandles.of(engine_app_name(*key))
                status = await asyncio.wait_for(
                    self._call(handles.unary.status.remote()), STATUS_PROBE_TIMEOUT_S
                )
            except Exception:  # not built or deployed yet, or a replica restarting: try again
                await asyncio.sleep(STATUS_PROBE_INTERVAL_S)
                continue
            self._engines[key] = handles
            self._status[key] = status
            self._answered[key].set()
            settled = bool(status["ready"] or status["error"])
            if settled:
                ready_gauge.set(1 if status["ready"] else 0)
            metrics.record_engine(self._pool, key, status)
            await asyncio.sleep(STATUS_RECHECK_INTERVAL_S if settled else STATUS_PROBE_INTERVAL_S)

    @staticmethod
    async def _call(response: Any) -> Any:
        return await response

    def _ready(self, deployment: str) -> set[str]:
        return {name for (d, name), status in self._status.items() if d == deployment and status.get("ready")}

    # --- HTTP routes -------------------------------------------------------------------------

    @fastapi_app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        """Liveness, and which ingress replica answered (weight changes must not replace it)."""
        return {"status": "ok", "replica": serve.get_replica_context().replica_id.unique_id}

    @fastapi_app.get(METRICS_PATH)
    async def prometheus_metrics(self, http: Request) -> Response:
        """This node's exposition; none to a scrape addressed to another Ray node of the pool.

        Serve's proxy on the pod Prometheus scraped hands the request to an ingress replica on any
        node (its own first, when it has one). Answering another node's target with this node's
        counts would make each counted once per pod: that target gets no series, and this node's
        own target carries them.
        """
        address = metrics.host_address(http.headers.get("host"))
        if address is not None and address != self._node_ip and await self._is_ray_node(address):
            return Response(b"", media_type=CONTENT_TYPE_LATEST)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def _is_ray_node(self, address: IPv4Address | IPv6Address) -> bool:
        """Whether `address` is a live Ray node's. An address not known yet is looked up in the GCS
        again, at most every NODE_IPS_REFRESH_S (a Service's address never is a node's)."""
        now = time.monotonic()
        if address not in self._node_ips and now - self._node_ips_read > NODE_IPS_REFRESH_S:
            nodes = await asyncio.to_thread(ray.nodes)
            self._node_ips = frozenset(
                ip_address(node["NodeManagerAddress"]) for node in nodes if node.get("Alive")
            )
            self._node_ips_read = now
        return address in self._node_ips

    def _visible(self, http: Request) -> list[str]:
        """The deployments the request's key may call (a listing shows no others); 401 without a key."""
        try:
            caller = self._gate.identify(http.headers.get("authorization"))
        except AuthError as refusal:
            raise _refused(refusal) from refusal
        return [name for name in self._deployments if caller.may_call(name)]

    def _listing(self, http: Request, framing: Framing, render: Callable[[list[str]], Any]) -> Response:
        """A model listing of the deployments the key may call, or the refusal in `framing`."""
        try:
            visible = self._visible(http)
        except OpenAIError as error:
            return _error_response(framing, error)
        return JSONResponse(render(visible))

    @fastapi_app.get("/v1/models")
    async def models(self, http: Request) -> Response:
        return self._listing(
            http,
            OPENAI_CHAT.errors,
            lambda visible: {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "baton"} for name in visible
                ],
            },
        )

    @fastapi_app.get(REVISIONS_PATH)
    async def revisions(self) -> dict[str, Any]:
        """Per revision: ready, or the reason it was refused (the operator reads this)."""
        return {
            name: {
                revision: self._status.get((name, revision), {"ready": False, "error": None})
                for revision in deployment.revisions
            }
            for name, deployment in self._deployments.items()
        }

    @fastapi_app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, OPENAI_CHAT)

    @fastapi_app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._serve(request, OPENAI_COMPLETIONS)

    # --- Ollama's API (docs/ollama.md) --------------------------------------------------------

    @fastapi_app.post("/api/chat")
    async def ollama_chat(self, request: Request) -> Response:
        return await self._serve(request, OLLAMA_CHAT)

    @fastapi_app.post("/api/generate")
    async def ollama_generate(self, request: Request) -> Response:
        return await self._serve(request, OLLAMA_GENERATE)

    @fastapi_app.get("/api/version")
    async def ollama_version(self) -> dict[str, str]:
        return {"version": OLLAMA_VERSION}

    @fastapi_app.get("/api/tags")
    async def ollama_tags(self, http: Request) -> Response:
        return self._listing(
            http, OLLAMA_CHAT.errors, lambda visible: ollama_protocol.tags(self._listed(visible))
        )

    @fastapi_app.get("/api/ps")
    async def ollama_ps(self, http: Request) -> Response:
        return self._listing(
            http,
            OLLAMA_CHAT.errors,
            lambda visible: ollama_protocol.running(
                self._listed(name for name in visible if self._ready(name))
            ),
        )

    @fastapi_app.post("/api/show")
    async def ollama_show(self, http: Request) -> Response:
        framing = OLLAMA_CHAT.errors
        try:
            visible = self._visible(http)
            raw = await _read_body(http, self._limits.max_body_bytes)
            name = parse_request(raw, OllamaShowRequest, self._limits).deployment()  # a small body
            if name not in visible:
                raise OpenAIError(404, "model not found", param="model")
        except OpenAIError as error:
            return _error_response(framing, error)
        [(route, modified_at)] = self._listed([name])
        return JSONResponse(ollama_protocol.show(route, modified_at))

    def _listed(self, names: Any) -> list[tuple[DeploymentRoute, str]]:
        return [self._routes[name] for name in names if name in self._routes]

    # --- request handling --------------------------------------------------------------------

    def _route(self, model: str, headers: Mapping[str, str], caller: Caller) -> tuple[_LiveDeployment, str]:
        try:
            self._gate.check_scope(caller, model)
        except AuthError as refusal:
            raise _refused(refusal) from refusal
        live = self._deployments.get(model)
        if live is None:
            available = sorted(name for name in self._deployments if caller.may_call(name))
            raise OpenAIError(404, f"model does not exist; available: {available}", param="model")
        ready = self._ready(model)
        # Only the operator's benchmark identity may pick a revision; a client's pin is ignored.
        pinned = headers.get(REVISION_HEADER) if caller.may_pin else None
        if pinned:
            if pinned not in live.revisions:
                raise OpenAIError(
                    400, f"{REVISION_HEADER}: {model!r} has no such revision", param=REVISION_HEADER
                )
            if pinned not in ready:
                reason = self._status.get((model, pinned), {}).get("error") or "still loading"
                raise OpenAIError(
                    503, f"revision {pinned!r} of {model!r} is not serving: {reason}", "service_unavailable"
                )
            return live, pinned
        try:
            return live, live.router.choose(ready, headers.get(live.router.policy.sticky_header))
        except NoServableRevisionError as error:
            raise OpenAIError(503, str(error), error_type="service_unavailable") from error

    async def _serve(self, http: Request, dialect: _Dialect) -> Response:
        """Every inference request, whichever wire format: the key and its quota first, then the rest.

        The door comes before the body is read: a caller without a key or over its quota costs a
        header lookup, not a parse.
        """
        try:
            caller = self._gate.enter(http.headers.get("authorization"))
        except AuthError as refusal:
            error = _refused(refusal)
            unrouted = (self._pool, metrics.UNROUTED, metrics.UNROUTED)
            self._record_failure(unrouted, dialect.endpoint, error, time.perf_counter())
            return _error_response(dialect.errors, error)
        try:
            response = await self._answer(http, dialect, caller)
        except BaseException:
            self._gate.leave(caller)
            raise
        if isinstance(response, StreamingResponse):
            response.body_iterator = _released_after(response.body_iterator, lambda: self._gate.leave(caller))
        else:
            self._gate.leave(caller)
        return response

    async def _answer(self, http: Request, dialect: _Dialect, caller: Caller) -> Response:
        """Parse, route, generate, record, frame."""
        started = time.perf_counter()
        progress = _Progress(started, _rfc3339(datetime.now(UTC)))
        endpoint = dialect.endpoint
        labels = (self._pool, metrics.UNROUTED, metrics.UNROUTED)
        framing = dialect.errors
        try:
            raw = await _read_body(http, self._limits.max_body_bytes)
            loop = asyncio.get_running_loop()
            parsed = await loop.run_in_executor(self._cpu, dialect.parse, raw, self._limits)
            framing = parsed.framing
            live, revision = self._route(parsed.model, http.headers, caller)
            if parsed.body is None:  # Ollama's "load the model": it is loaded, nothing to generate
                loaded = Answer("", {}, ["load"])
                return Response(framing.end(loaded, progress.timing(started)), media_type="application/json")
            labels = (self._pool, parsed.model, revision)
            body = parsed.body
            generation = live.generation(body, revision)
        except OpenAIError as error:
            self._record_failure(labels, endpoint, error, started)
            return _error_response(framing, error)
        parameters = {
            "max_tokens": generation.max_tokens,
            "temperature": body.temperature,
            "top_p": body.top_p,
        }
        span = self._tracer.start_request_span(
            "chat" if generation.kind == "chat" else "text_completion", body.model, parameters
        )
        engine = self._engines[(body.model, revision)]
        in_flight = metrics.IN_FLIGHT.labels(*labels)
        in_flight.inc()
        request = _InFlight(labels, endpoint, started, generation, span, live, framing)
        if not body.stream and not framing.collects:
            try:
                result = await engine.unary.generate.remote(generation)
            except Exception as error:
                in_flight.dec()
                return self._fail(request, _as_openai_error(error))
            in_flight.dec()
            first_token_at = _unary_first_token_at(result)
            result["model"] = body.model
            answer = Answer(
                _answer_text(result), result["usage"], [result["choices"][0].get("finish_reason") or ""]
            )
            await self._finish(request, first_token_at, answer)
            return JSONResponse(result, headers={REVISION_HEADER: revision})
        stream = engine.streaming.stream.remote(generation)
        try:
            first = await stream.__anext__()
        except Exception as error:
            in_flight.dec()
            return self._fail(request, _as_openai_error(error))
        if not body.stream:
            return await self._collect(first, stream, request, progress, revision)
        events = self._stream_events(first, stream, request, progress)
        return StreamingResponse(events, media_type=framing.media_type, headers={REVISION_HEADER: revision})

    async def _collect(
        self, first: list[dict[str, Any]], stream: Any, request: _InFlight, progress: _Progress, revision: str
    ) -> Response:
        """A non-streaming answer decoded as a stream, so its timings are measured like a stream's."""
        batch: list[dict[str, Any]] | None = first
        try:
            while batch is not None:
                for chunk in batch:
                    progress.add(chunk)
                batch = await anext(stream, None)
        except Exception as error:
            return self._fail(request, _as_openai_error(error))
        finally:
            metrics.IN_FLIGHT.labels(*request.labels).dec()
        finished = time.perf_counter()
        answer = progress.answer()
        await self._finish(request, progress.first_token_at, answer)
        return Response(
            request.framing.end(answer, progress.timing(finished)),
            media_type="application/json",
            headers={REVISION_HEADER: revision},
        )

    async def _stream_events(
        self, first: list[dict[str, Any]], stream: Any, request: _InFlight, progress: _Progress
    ) -> AsyncIterator[bytes]:
        framing = request.framing
        failed: OpenAIError | None = None
        batch: list[dict[str, Any]] | None = first
        try:
            while batch is not None:
                now = _rfc3339(datetime.now(UTC))
                events: list[bytes] = []  # one HTTP write per engine batch, not per token
                for chunk in batch:
                    progress.add(chunk)
                    events.append(framing.chunk(chunk, now))
                if any(events):
                    yield b"".join(events)
                batch = await anext(stream, None)
            yield framing.end(progress.answer(), progress.timing(time.perf_counter()))
        except Exception as error:  # the engine failed mid-stream: the status line is already sent
            failed = _as_openai_error(error)
            yield framing.stream_error(failed)
        finally:
            metrics.IN_FLIGHT.labels(*request.labels).dec()
            if failed is not None:
                self._fail(request, failed)
            else:
                await self._finish(request, progress.first_token_at, progress.answer())

    def _record_failure(
        self, labels: tuple[str, str, str], endpoint: str, error: OpenAIError, started: float
    ) -> None:
        metrics.count_request(labels, endpoint, str(error.status))
        if is_client_error(error.status):
            # The client's fault, not the revision's: it must not count as the revision's error (a
            # client could force a rollback) nor as its latency (a fast refusal is no answer).
            return
        metrics.REQUEST_ERRORS.labels(*labels, endpoint, error.error_type).inc()
        metrics.REQUEST_DURATION.labels(*labels, endpoint).observe(time.perf_counter() - started)

    def _fail(self, request: _InFlight, error: OpenAIError) -> JSONResponse:
        self._record_failure(request.labels, request.endpoint, error, request.started)
        self._tracer.record_error(request.span, error.error_type, error.message)
        request.span.end()
        return _error_response(request.framing, error)

    async def _finish(self, request: _InFlight, first_token_at: float | None, answer: Answer) -> None:
        labels, generation = request.labels, request.generation
        finished = time.perf_counter()
        await self._record_answer(
            labels, request.endpoint, request.started, finished, first_token_at, answer, generation
        )
        prompt = generation.messages if generation.kind == "chat" else generation.prompt
        self._tracer.record_answer(
            request.span, labels[2], answer.usage, answer.finish_reasons, prompt, answer.text
        )
        request.span.end()
        shadow = request.live.router.shadow_for(labels[2], self._ready(labels[1]))
        if shadow is not None:
            task = asyncio.create_task(self._mirror(labels[1], shadow, generation, answer.text))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _record_answer(
        self,
        labels: tuple[str, str, str],
        endpoint: str,
        started: float,
        finished: float,
        first_token_at: float | None,
        answer: Answer,
        generation: GenerationRequest,
    ) -> None:
        metrics.count_request(labels, endpoint, "200")
        metrics.REQUEST_DURATION.labels(*labels, endpoint).observe(finished - started)
        output_tokens = answer.usage.get("completion_tokens", 0)
        metrics.PROMPT_TOKENS.labels(*labels).inc(answer.usage.get("prompt_tokens", 0))
        metrics.OUTPUT_TOKENS.labels(*labels).inc(output_tokens)
        if first_token_at is not None:
            metrics.TIME_TO_FIRST_TOKEN.labels(*labels).observe(first_token_at - started)
            if output_tokens > 1:
                metrics.TIME_PER_OUTPUT_TOKEN.labels(*labels).observe(
                    (finished - first_token_at) / (output_tokens - 1)
                )
        if generation.json_schema is not None:
            valid = await asyncio.get_running_loop().run_in_executor(
                self._cpu, _structured_output_valid, answer.text, generation.json_schema
            )
            metrics.STRUCTURED_OUTPUTS.labels(*labels, endpoint, "true" if valid else "false").inc()

    async def _mirror(
        self,
        deployment: str,
        shadow: str,
        generation: GenerationRequest,
        primary_text: str,
    ) -> None:
        """Ask the shadow revision the same question; record and score its answer, return nothing."""
        labels = (self._pool, deployment, shadow)
        started = time.perf_counter()
        try:
            result = await self._engines[(deployment, shadow)].unary.generate.remote(generation)
        except Exception as error:
            self._record_failure(labels, SHADOW_ENDPOINT, _as_openai_error(error), started)
            metrics.SHADOW_COMPARISONS.labels(*labels, "error").inc()
            return
        answer = Answer(
            _answer_text(result), result["usage"], [result["choices"][0].get("finish_reason") or ""]
        )
        await self._record_answer(
            labels, SHADOW_ENDPOINT, started, time.perf_counter(), None, answer, generation
        )
        outcome = "match" if answer.text == primary_text else "mismatch"
        metrics.SHADOW_COMPARISONS.labels(*labels, outcome).inc()


# ---------------------------------------------------------------------------------------------
# Builders and the Serve config


def build_ingress_app(args: dict[str, Any]) -> serve.Application:
    """`import_path` builder of the ingress application (`baton_serving.app:build_ingress_app`)."""
    spec = IngressArgs.model_validate(args)
    env = {metrics.MULTIPROC_ENV: str(metrics.default_multiprocess_dir(spec.pool)), **SERVE_PROCESS_ENV}
    return OpenAIIngress.options(
        num_replicas=spec.ingress_replicas,
        user_config=RouteTable(deployments=[]).model_dump(mode="json"),
        ray_actor_options={"num_cpus": INGRESS_NUM_CPUS, "runtime_env": {"env_vars": env}},
    ).bind(
        spec.pool,
        spec.tracing.model_dump(mode="json"),
        spec.limits.model_dump(mode="json"),
        spec.auth.model_dump(mode="json"),
        spec.ingress_replicas,
    )


def build_engine_app(args: dict[str, Any]) -> serve.Application:
    """`import_path` builder of one revision's engine application (`baton_serving.app:build_engine_app`)."""
    spec = EngineArgs.model_validate(args)
    revision = spec.revision
    if revision.engine == EngineKind.VLLM:
        from ray.serve.llm import LLMConfig, build_llm_deployment

        from baton_serving.engines.vllm import render_llm_config
        from baton_serving.engines.vllm_server import VllmEngineServer

        return build_llm_deployment(
            LLMConfig(**render_llm_config(spec.deployment, revision)),
            deployment_cls=VllmEngineServer,
            bind_kwargs={"artifact_digest": revision.artifact.digest},
            override_serve_options={"name": ENGINE_DEPLOYMENT},  # the name the ingress calls
        )
    return EngineServer.options(
        **revision.serve_replica_options(),
        max_ongoing_requests=revision.max_ongoing_requests,
        ray_actor_options={**replica_actor_options(revision), "runtime_env": {"env_vars": SERVE_PROCESS_ENV}},
    ).bind(
        spec.deployment,
        revision.model_dump(mode="json"),
        spec.artifact_cache_dir,
        spec.limits.model_dump(mode="json"),
        spec.fetch.model_dump(mode="json"),
    )


def apply_serve_config(serve_config: dict[str, Any]) -> None:
    """Apply a rendered config to the running local Serve instance (what KubeRay does in a cluster).

    Uses the controller's declarative deploy, the same call the Serve REST API makes: applications
    missing from the config are removed, unchanged ones are left running.
    """
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(serve_config))


def wait_until_running(app_names: list[str], timeout_s: float = 300.0) -> None:
    """Block until every named application is RUNNING; raise with Serve's message if one fails."""
    deadline = time.monotonic() + timeout_s
    while True:
        applications = serve.status().applications
        pending = {}
        for name in app_names:
            app = applications.get(name)
            status = app.status if app else "NOT_STARTED"
            if status == "DEPLOY_FAILED":
                raise RuntimeError(f"Serve application {name!r} failed to deploy: {app.message}")
            if status != "RUNNING":
                pending[name] = status
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Serve applications not running after {timeout_s:.0f} s: {pending}")
        time.sleep(0.5)
