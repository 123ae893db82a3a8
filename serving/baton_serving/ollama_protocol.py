"""Ollama's wire format, translated to and from the one request path the OpenAI API uses.

Tools built on Ollama's API (Open WebUI, AnythingLLM, LangChain's Ollama integration, the `ollama`
client libraries) call `/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/ps` and
`/api/version`. This module is pure translation, no second request path: an Ollama body is
decoded under the same `RequestLimits`, turned into the OpenAI request it means
(`openai_request`), and validated by the same OpenAI models, so every bound, the JSON-schema
checks and the mapping to the engine's `GenerationRequest` exist once. Errors found there are
renamed to the Ollama field the client sent (`max_tokens` -> `options.num_predict`) and answered
in Ollama's shape, `{"error": "..."}`, never repeating what the client sent. Answers are framed as
Ollama frames them: one JSON object, or NDJSON lines ending with a `done: true` line that carries
`done_reason` and the timings in nanoseconds.

What baton cannot honour is refused with a 400 naming the field (images, tools, thinking, a
prompt template, `suffix`, `context`), never silently ignored; options that only tune how Ollama
loads a model (`num_ctx`, `num_gpu`, ...) are accepted and not applied, since a revision's spec
decides those. The list is in docs/ollama.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from baton_serving.config import DeploymentRoute, EngineKind, RequestLimits, RevisionRoute
from baton_serving.openai_protocol import (
    Answer,
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    Timing,
    WireModel,
    decode_body,
    validate_body,
)

# The oldest Ollama release whose API these endpoints cover (JSON-schema `format` came in 0.5.0):
# clients that gate features on `/api/version` then ask only for what is here.
OLLAMA_VERSION = "0.5.0"
# Ollama names a model `name:tag`; a deployment is served under this one tag.
TAG = "latest"
# Models stay loaded while they are deployed; Ollama reports a keep-alive of "forever" as a date
# this far away.
NEVER_EXPIRES = "2318-01-01T00:00:00Z"

# Why a field that Ollama would honour is refused unless empty (or false).
_UNSUPPORTED = {
    "images": "images are not supported: baton serves text models",
    "tools": "tool calling is not supported",
    "think": "thinking is not supported",
    "logprobs": "log probabilities are not supported",
    "top_logprobs": "log probabilities are not supported",
    "suffix": "fill-in-the-middle (a suffix) is not supported",
    "template": "a prompt template is not supported: the model's own chat template applies",
    "context": "context is not supported (Ollama deprecated it): send the conversation to /api/chat",
}


def deployment_of(model: str) -> str:
    """The deployment an Ollama model name means: `medical` and `medical:latest` are `medical`.

    Any other tag stays in the name, which then matches no deployment (a 404): revisions are not
    chosen by clients.
    """
    return model.removesuffix(f":{TAG}")


def listed_name(deployment: str) -> str:
    return f"{deployment}:{TAG}"


# ---------------------------------------------------------------------------------------------
# Requests


class OllamaOptions(WireModel):
    """`options`: every option Ollama documents. The sampling ones are applied; the others are
    accepted and not applied (a revision's spec decides how a model is loaded)."""

    seed: int | None = Field(default=None, description="Sampling seed; -1 (Ollama's default) is random.")
    num_predict: int | None = Field(
        default=None,
        description="Most tokens to generate (OpenAI's `max_tokens`); negative or unset: the "
        "ingress's default, at most 256 and half the context.",
    )
    top_k: int | None = Field(default=None, description="Sample among the k likeliest tokens.")
    top_p: float | None = Field(default=None, description="Nucleus sampling mass.")
    temperature: float | None = Field(default=None, description="Sampling temperature.")
    repeat_penalty: float | None = Field(default=None, description="Penalty on repeating recent tokens.")
    stop: list[str] | None = Field(default=None, description="Stop sequences.")
    # Accepted, not applied.
    num_keep: int | None = Field(default=None, description="Not applied.")
    min_p: float | None = Field(default=None, description="Not applied.")
    typical_p: float | None = Field(default=None, description="Not applied.")
    tfs_z: float | None = Field(default=None, description="Not applied.")
    repeat_last_n: int | None = Field(default=None, description="Not applied.")
    presence_penalty: float | None = Field(default=None, description="Not applied.")
    frequency_penalty: float | None = Field(default=None, description="Not applied.")
    mirostat: int | None = Field(default=None, description="Not applied.")
    mirostat_tau: float | None = Field(default=None, description="Not applied.")
    mirostat_eta: float | None = Field(default=None, description="Not applied.")
    penalize_newline: bool | None = Field(default=None, description="Not applied.")
    numa: bool | None = Field(default=None, description="Load-time option; not applied.")
    num_ctx: int | None = Field(default=None, description="Load-time option; the revision's context applies.")
    num_batch: int | None = Field(default=None, description="Load-time option; not applied.")
    num_gpu: int | None = Field(default=None, description="Load-time option; not applied.")
    main_gpu: int | None = Field(default=None, description="Load-time option; not applied.")
    low_vram: bool | None = Field(default=None, description="Load-time option; not applied.")
    f16_kv: bool | None = Field(default=None, description="Load-time option; not applied.")
    logits_all: bool | None = Field(default=None, description="Load-time option; not applied.")
    vocab_only: bool | None = Field(default=None, description="Load-time option; not applied.")
    use_mmap: bool | None = Field(default=None, description="Load-time option; not applied.")
    use_mlock: bool | None = Field(default=None, description="Load-time option; not applied.")
    embedding_only: bool | None = Field(default=None, description="Load-time option; not applied.")
    num_thread: int | None = Field(
        default=None, description="Load-time option; the revision's threads apply."
    )

    def sampling(self) -> dict[str, Any]:
        """The OpenAI request fields these options set."""
        fields: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "stop": self.stop,
            "seed": None if self.seed == -1 else self.seed,
            "max_tokens": None if self.num_predict is not None and self.num_predict < 0 else self.num_predict,
        }
        return {name: value for name, value in fields.items() if value is not None}


def _refuse_if_set(value: Any, info: ValidationInfo) -> Any:
    if value:
        raise ValueError(_UNSUPPORTED[str(info.field_name)])
    return value


class OllamaMessage(BaseModel):
    # Fields of a chat history the engines have no use for (`thinking`, `tool_calls`, `tool_name`)
    # are dropped, never handed to a model's chat template (as for OpenAI messages).
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Author role.")
    content: str = Field(default="", description="Message text (null is empty).")
    images: list[Any] | None = Field(default=None, description="Refused unless empty: text models only.")

    @field_validator("content", mode="before")
    @classmethod
    def _null_is_empty(cls, content: Any) -> Any:
        return "" if content is None else content

    @field_validator("images")
    @classmethod
    def _no_images(cls, images: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        return _refuse_if_set(images, info)


class _OllamaGeneration(WireModel):
    model: str = Field(min_length=1, description="`name` or `name:latest`, where name is the deployment.")
    format: Any = Field(default=None, description="`json`, or a JSON schema the answer must follow.")
    options: OllamaOptions | None = Field(default=None, description="Sampling options.")
    stream: bool = Field(default=True, description="Answer as NDJSON lines (Ollama's default).")
    keep_alive: Any = Field(default=None, description="A duration; accepted, deployed models stay loaded.")
    think: Any = Field(default=None, description="Refused unless false: no thinking models.")
    logprobs: bool | None = Field(default=None, description="Refused unless false.")
    top_logprobs: int | None = Field(default=None, description="Refused unless 0.")

    @field_validator("format")
    @classmethod
    def _json_or_a_schema(cls, value: Any) -> Any:
        if value is None or value in ("", "json") or isinstance(value, dict):
            return value
        raise ValueError('must be "json" or a JSON schema object')

    @field_validator("keep_alive")
    @classmethod
    def _a_duration(cls, value: Any) -> Any:
        if value is None or (isinstance(value, int | float | str) and not isinstance(value, bool)):
            return value
        raise ValueError('must be a number of seconds or a duration such as "5m"')

    @field_validator("think", "logprobs", "top_logprobs")
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info)

    def openai_fields(self) -> dict[str, Any]:
        """The OpenAI request fields every Ollama generation sets."""
        fields: dict[str, Any] = {
            "model": deployment_of(self.model),
            "stream": self.stream,
            **(self.options.sampling() if self.options else {}),
        }
        if self.format == "json":
            fields["response_format"] = {"type": "json_object"}
        elif isinstance(self.format, dict):
            fields["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "format", "schema": self.format},
            }
        return fields


class OllamaChatRequest(_OllamaGeneration):
    """`POST /api/chat`."""

    messages: list[OllamaMessage] = Field(default_factory=list, description="The conversation so far.")
    tools: list[Any] | None = Field(default=None, description="Refused unless empty.")

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, tools: list[Any] | None, info: ValidationInfo) -> list[Any] | None:
        return _refuse_if_set(tools, info)

    def openai_body(self) -> dict[str, Any] | None:
        """The OpenAI chat body this request means; None for a request that only loads the model."""
        if not self.messages:
            return None
        messages = [{"role": message.role, "content": message.content} for message in self.messages]
        return {**self.openai_fields(), "messages": messages}


class OllamaGenerateRequest(_OllamaGeneration):
    """`POST /api/generate`: the prompt as a user turn in the model's chat template, or as is (`raw`)."""

    prompt: str = Field(default="", description="The prompt; empty only loads the model.")
    system: str | None = Field(default=None, description="A system message before the prompt.")
    raw: bool = Field(default=False, description="Continue the prompt as is, without the chat template.")
    suffix: str | None = Field(default=None, description="Refused unless empty (no fill-in-the-middle).")
    template: str | None = Field(
        default=None, description="Refused unless empty: the model's template applies."
    )
    context: list[int] | None = Field(
        default=None, description="Refused unless empty (deprecated by Ollama): use `/api/chat`."
    )
    images: list[Any] | None = Field(default=None, description="Refused unless empty: text models only.")

    @field_validator("suffix", "template", "context", "images")
    @classmethod
    def _unsupported(cls, value: Any, info: ValidationInfo) -> Any:
        return _refuse_if_set(value, info)

    def openai_body(self) -> dict[str, Any] | None:
        """The OpenAI body this request means; None for a request that only loads the model."""
        if not self.prompt:
            return None
        if self.raw:
            return {**self.openai_fields(), "prompt": self.prompt}
        system = [{"role": "system", "content": self.system}] if self.system else []
        return {**self.openai_fields(), "messages": [*system, {"role": "user", "content": self.prompt}]}


class OllamaShowRequest(WireModel):
    """`POST /api/show` (`name` is the older spelling of `model`)."""

    model: str | None = Field(default=None, min_length=1, description="The model name.")
    name: str | None = Field(default=None, min_length=1, description="Older name of `model`.")
    verbose: bool = Field(default=False, description="Accepted; there is nothing more to show.")

    def deployment(self) -> str:
        if not (self.model or self.name):
            raise OpenAIError(400, "model is required", param="model")
        return deployment_of(self.model or self.name or "")


# OpenAI field paths, as the shared validation names them, and what the Ollama client sent instead.
_OLLAMA_PARAM = {
    "max_tokens": "options.num_predict",
    "temperature": "options.temperature",
    "top_p": "options.top_p",
    "top_k": "options.top_k",
    "repeat_penalty": "options.repeat_penalty",
    "seed": "options.seed",
    "stop": "options.stop",
    "response_format.json_schema.schema": "format",
    "response_format": "format",
}


def ollama_error(error: OpenAIError) -> OpenAIError:
    """The same error, naming the Ollama field (its message starts with the field path it names)."""
    for openai_name, ollama_name in _OLLAMA_PARAM.items():
        if error.param is not None and (
            error.param == openai_name or error.param.startswith((f"{openai_name}.", f"{openai_name}["))
        ):
            param = ollama_name + error.param[len(openai_name) :]
            message = error.message
            for old, new in ((error.param, param), (openai_name, ollama_name)):
                if message.startswith(old):
                    message = new + message[len(old) :]
                    break
            return OpenAIError(error.status, message, error.error_type, param)
    return error


@dataclass(frozen=True)
class OllamaRequest:
    """A parsed Ollama generation: what the client sent and the OpenAI request it means."""

    wire: OllamaChatRequest | OllamaGenerateRequest
    openai: ChatCompletionRequest | CompletionRequest | None  # None: a request that only loads the model


def parse_ollama(
    raw: bytes, wire: type[OllamaChatRequest | OllamaGenerateRequest], limits: RequestLimits
) -> OllamaRequest:
    """Decode, validate and translate an Ollama body, or raise a 4xx naming the Ollama field."""
    request = validate_body(decode_body(raw, limits), wire, limits)
    body = request.openai_body()
    if body is None:
        return OllamaRequest(request, None)
    model = ChatCompletionRequest if "messages" in body else CompletionRequest
    try:
        return OllamaRequest(request, validate_body(body, model, limits))
    except OpenAIError as error:
        raise ollama_error(error) from error


# ---------------------------------------------------------------------------------------------
# Answers


def ollama_line(payload: dict[str, Any]) -> bytes:
    """One NDJSON line (compact JSON has no raw newline, so a line is one object)."""
    return json.dumps(payload, separators=(",", ":")).encode() + b"\n"


def _content(kind: Literal["chat", "generate"], text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text}


def _done(answer: Answer, timing: Timing) -> dict[str, Any]:
    return {
        "done": True,
        "done_reason": (answer.finish_reasons or ["stop"])[-1] or "stop",
        "total_duration": timing.total_ns,
        "load_duration": 0,  # a deployed model is loaded before it gets traffic
        "prompt_eval_count": answer.usage.get("prompt_tokens", 0),
        "prompt_eval_duration": timing.prompt_eval_ns,
        "eval_count": answer.usage.get("completion_tokens", 0),
        "eval_duration": timing.eval_ns,
    }


@dataclass(frozen=True)
class OllamaFraming:
    """Ollama's framing (`openai_protocol.Framing`) of one request.

    Non-streaming answers are decoded as streams too (`collects`), so their timings are measured
    like a stream's: `prompt_eval_duration` is the time to the first token. A request that only
    loads the model is answered by `end` with `done_reason: "load"` and nothing generated.
    """

    kind: Literal["chat", "generate"]
    model: str = ""  # as the client named it
    stream: bool = True
    media_type: str = "application/x-ndjson"
    collects: bool = True

    def chunk(self, chunk: dict[str, Any], now: str) -> bytes:
        if not self.stream or not chunk["choices"]:
            return b""
        choice = chunk["choices"][0]
        text = (choice.get("delta") or {}).get("content") or choice.get("text") or ""
        if not text:  # a role-only or finishing chunk: the `done` line carries the reason
            return b""
        return ollama_line(
            {"model": self.model, "created_at": now, **_content(self.kind, text), "done": False}
        )

    def end(self, answer: Answer, timing: Timing) -> bytes:
        text = "" if self.stream else answer.text  # a stream's last line has the text already sent
        whole = {"model": self.model, "created_at": timing.created_at, **_content(self.kind, text)}
        return ollama_line({**whole, **_done(answer, timing)})

    def stream_error(self, error: OpenAIError) -> bytes:
        return ollama_line(self.error_body(error))

    def error_body(self, error: OpenAIError) -> dict[str, Any]:
        return {"error": ollama_error(error).message}


# ---------------------------------------------------------------------------------------------
# Listings


def primary_revision(deployment: DeploymentRoute) -> RevisionRoute:
    """The revision that answers most of a deployment's traffic (the first declared of equals)."""
    weights = deployment.route.weights
    return max(deployment.revisions, key=lambda revision: weights.get(revision.name, 0.0))


def _details(revision: RevisionRoute) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": "gguf" if revision.engine == EngineKind.LLAMACPP else "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": revision.quantization.value if revision.quantization else "",
    }


def _listing(deployment: DeploymentRoute, modified_at: str) -> dict[str, Any]:
    revision = primary_revision(deployment)
    name = listed_name(deployment.name)
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at,
        "size": revision.size_bytes or 0,
        "digest": (revision.digest or "").removeprefix("sha256:"),
        "details": _details(revision),
    }


def tags(deployments: list[tuple[DeploymentRoute, str]]) -> dict[str, Any]:
    """`GET /api/tags`: every deployment, with its primary revision's artifact and when it changed."""
    return {"models": [_listing(deployment, modified_at) for deployment, modified_at in deployments]}


def running(deployments: list[tuple[DeploymentRoute, str]]) -> dict[str, Any]:
    """`GET /api/ps`: the deployments with a revision serving (CPU: no VRAM)."""
    return {
        "models": [
            {
                **_listing(deployment, modified_at),
                "expires_at": NEVER_EXPIRES,
                "size_vram": 0,
                "context_length": primary_revision(deployment).context_length,
            }
            for deployment, modified_at in deployments
        ]
    }


def show(deployment: DeploymentRoute, modified_at: str) -> dict[str, Any]:
    """`POST /api/show`: what the ingress knows of a deployment (no GGUF metadata, no template)."""
    revision = primary_revision(deployment)
    name = listed_name(deployment.name)
    return {
        "modelfile": f"# served by baton: deployment {deployment.name}\nFROM {name}\n",
        "parameters": f"num_ctx {revision.context_length}",
        "template": "",
        "details": _details(revision),
        "model_info": {},
        "capabilities": ["completion"],
        "modified_at": modified_at,
    }
