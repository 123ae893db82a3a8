"""The OpenAI wire format the ingress accepts: request bodies, the error shape and SSE framing.

It is also the ingress's one request path: other wire formats (`ollama_protocol`) decode with
`decode_body`, translate into these request models and frame answers through `Framing`.

Requests are validated here, before any engine is involved, so a malformed or oversized request
costs little and gets a 4xx in OpenAI's error shape naming the offending field path
(`messages[3].content`); no message repeats what the client sent. Every parse failure is a 4xx:
an engine is only ever handed a request it can serve, so its failures are its own (they count
against the revision), never a client's. The bounds are `RequestLimits`, passed as pydantic's
validation context.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from baton_serving.config import EndpointContract, RequestLimits
from baton_serving.engines import GenerationRequest
from baton_serving.patterns import check_schema_patterns
from baton_serving.wire import field_path


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class WireModel(BaseModel):
    """A client request body (or a part of one): a field it does not know is refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


WireT = TypeVar("WireT", bound=WireModel)
DEFAULT_LIMITS = RequestLimits()
# A path inside a client's schema (its keys are the client's text) or a decoder's message is cut
# short when an error names it.
MAX_PATH_CHARS = 120


def _limits(info: ValidationInfo) -> RequestLimits:
    """The bounds this validation runs under (the defaults when a caller gave none)."""
    return info.context if isinstance(info.context, RequestLimits) else DEFAULT_LIMITS


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in a decoded JSON value (a scalar is depth 0)."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth + 1)
            pending.extend(
                (child, depth + 1) for child in (node.values() if isinstance(node, dict) else node)
            )
    return deepest


class JsonSchemaFormat(WireModel):
    """`response_format.json_schema`: the schema the answer must follow."""

    name: str = Field(description="Name of the schema.")
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema.")
    strict: bool | None = Field(
        default=None, description="Accepted for compatibility; output is always constrained."
    )
    description: str | None = Field(default=None, description="What the schema describes.")

    @field_validator("schema_")
    @classmethod
    def _is_a_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_response_schema(schema, _limits(info))
        return schema


def check_response_schema(schema: dict[str, Any], limits: RequestLimits) -> None:
    """Raise ValueError unless `schema` is a JSON Schema within `limits`: a client's
    `response_format` schema, or a deployment's default one, before any engine compiles it."""
    if json_depth(schema) > limits.max_schema_depth:
        raise ValueError(f"nests deeper than {limits.max_schema_depth} levels")
    if len(json.dumps(schema, separators=(",", ":"))) > limits.max_schema_bytes:
        raise ValueError(f"is larger than {limits.max_schema_bytes} bytes")
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        # Where in the schema, and the meta-schema rule it breaks; never the offending value.
        where = (field_path(tuple(error.path)) or "the root")[:MAX_PATH_CHARS]
        raise ValueError(f"not a valid JSON Schema: {where} fails {error.validator!r}") from error
    except RecursionError as error:  # a `$ref` cycle the meta-schema check follows
        raise ValueError("not a valid JSON Schema: it refers to itself without end") from error
    check_schema_patterns(schema)


class ResponseFormat(WireModel):
    """`response_format`: plain text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"] = Field(description="Kind of output.")
    json_schema: JsonSchemaFormat | None = Field(default=None, description="Required for `json_schema`.")


class StreamOptions(WireModel):
    include_usage: bool = Field(default=False, description="Send a final chunk with token usage.")


class _SamplingRequest(WireModel):
    model: str = Field(description="The deployment name.")
    max_tokens: int | None = Field(default=None, ge=1, description="Upper bound on output tokens.")
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    n: int = Field(default=1, ge=1, le=1, description="Number of choices; only 1 is supported.")
    stop: list[str] | None = Field(default=None, description="Stop sequences: a string or an array of them.")
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1, description="Sampling seed.")
    stream: bool = Field(default=False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Streaming options.")
    user: str | None = Field(default=None, description="End-user id (not logged).")
    top_k: int | None = Field(
        default=None,
        ge=0,
        le=2**31 - 1,
        description="Sample among the k likeliest tokens (0: all). An extension of OpenAI's API, as in "
        "llama.cpp's and vLLM's servers; unset leaves the engine's default.",
    )
    repeat_penalty: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Penalty on repeating recent tokens (1: none). An extension of OpenAI's API, as in "
        "llama.cpp's server (vLLM's `repetition_penalty`); unset leaves the engine's default.",
    )
    presence_penalty: float = Field(default=0.0, ge=-2, le=2, description="Accepted; not applied.")
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2, description="Accepted; not applied.")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_as_a_list(cls, stop: Any) -> Any:
        if stop is not None and not isinstance(stop, str | list):
            raise ValueError("must be a string or an array of strings")
        return [stop] if isinstance(stop, str) else stop

    def sampling(self) -> dict[str, Any]:
        """The `GenerationRequest` fields that chat and completion requests share."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repeat_penalty": self.repeat_penalty,
            "stop": self.stop or [],
            "seed": self.seed,
        }

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, stop: list[str] | None, info: ValidationInfo) -> list[str] | None:
        limits = _limits(info)
        if stop and len(stop) > limits.max_stop_sequences:
            raise ValueError(f"at most {limits.max_stop_sequences} stop sequences")
        if any(len(sequence) > limits.max_stop_chars for sequence in stop or []):
            raise ValueError(f"a stop sequence is longer than {limits.max_stop_chars} characters")
        return stop


class TextPart(WireModel):
    """One part of a message's content array; only text parts are supported."""

    type: Literal["text"] = Field(description="Part kind; only `text`.")
    text: str = Field(description="The text.")


class ChatMessage(BaseModel):
    # Fields OpenAI clients send that the engines have no use for (`tool_calls`, `refusal`, ...) are
    # dropped here, never handed to a model's chat template.
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"] = Field(description="Author role.")
    content: list[TextPart] | None = Field(
        default=None,
        description="Message text: a string, or an array of text parts (as OpenAI clients send it).",
    )
    name: str | None = Field(default=None, description="Name of the author.")

    @field_validator("content", mode="before")
    @classmethod
    def _text_as_one_part(cls, content: Any) -> Any:
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        if content is not None and not isinstance(content, list):
            raise ValueError("must be a string or an array of text parts")
        return content

    def for_engine(self) -> dict[str, str]:
        """The message as chat templates take it: the text parts joined into one string."""
        message = {"role": self.role, "content": "\n".join(part.text for part in self.content or [])}
        return message if self.name is None else {**message, "name": self.name}


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")

    @field_validator("messages")
    @classmethod
    def _bounded_messages(cls, messages: list[ChatMessage], info: ValidationInfo) -> list[ChatMessage]:
        if len(messages) > _limits(info).max_messages:
            raise ValueError(f"at most {_limits(info).max_messages} messages")
        return messages

    max_completion_tokens: int | None = Field(default=None, ge=1, description="Newer name of `max_tokens`.")
    response_format: ResponseFormat | None = Field(default=None, description="Structured output.")

    def json_schema(self, default: dict[str, Any] | None) -> dict[str, Any] | None:
        """The schema the answer must follow: the client's, else the deployment's `default`."""
        if self.response_format is None:
            return default
        if self.response_format.type == "text":
            return None
        if self.response_format.type == "json_object":
            return {"type": "object"}
        if self.response_format.json_schema is None:
            raise OpenAIError(
                400, "response_format.json_schema is required", param="response_format.json_schema"
            )
        return self.response_format.json_schema.schema_

    def generation(self, contract: EndpointContract, context_length: int) -> GenerationRequest:
        if self.max_completion_tokens is not None:
            requested, param = self.max_completion_tokens, "max_completion_tokens"
        else:
            requested, param = self.max_tokens, "max_tokens"
        return GenerationRequest(
            kind="chat",
            messages=[message.for_engine() for message in self.messages],
            max_tokens=checked_max_tokens(requested, param, contract.max_output_tokens, context_length),
            json_schema=self.json_schema(contract.default_json_schema),
            **self.sampling(),
        )


class CompletionRequest(_SamplingRequest):
    prompt: str = Field(description="The text to continue.")

    def generation(self, contract: EndpointContract, context_length: int) -> GenerationRequest:
        """A plain completion: bounded like a chat request, never constrained by a schema (the
        completions API has no `response_format`)."""
        return GenerationRequest(
            kind="completion",
            prompt=self.prompt,
            max_tokens=checked_max_tokens(
                self.max_tokens, "max_tokens", contract.max_output_tokens, context_length
            ),
            **self.sampling(),
        )


def checked_max_tokens(requested: int | None, param: str, cap: int, context_length: int) -> int:
    """The output tokens to generate: what the client asked for, refused with 400 past the deployment's
    cap (`maxOutputTokens`) or the context window; the cap, at most half the window, when it asked
    for none. Refused, not clamped, as OpenAI does: a clamped request would come back cut short with
    `finish_reason: length` and nothing to tell the client that it was not what it asked for."""
    if requested is None:
        return min(cap, context_length // 2)
    if requested > cap:
        raise OpenAIError(
            400,
            f"{param} is {requested}, but this deployment allows at most {cap} output tokens",
            param=param,
        )
    if requested >= context_length:
        raise OpenAIError(
            400,
            f"{param} is {requested}, but this model's context length is {context_length} tokens "
            "(prompt and completion together)",
            param=param,
        )
    return requested


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _first_lone_surrogate(value: Any) -> tuple[int | str, ...] | None:
    """Where a string holds a lone surrogate (`"\\ud800"`): valid JSON, but no UTF-8 can carry it."""
    pending: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while pending:
        node, loc = pending.pop()
        if isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError:
                return loc
        elif isinstance(node, dict):
            pending.extend((child, (*loc, key)) for key, child in node.items())
            if any(_first_lone_surrogate(key) is not None for key in node):
                return loc
        elif isinstance(node, list):
            pending.extend((child, (*loc, index)) for index, child in enumerate(node))
    return None


def decode_body(raw: bytes, limits: RequestLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A request body as a JSON object within the limits, or a 4xx saying what is wrong with it.

    Every wire format the ingress speaks decodes its bodies here, so each bound holds for all.
    """
    if len(raw) > limits.max_body_bytes:
        raise OpenAIError(413, f"request body is larger than {limits.max_body_bytes} bytes")
    try:
        payload = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as error:
        raise OpenAIError(400, f"request body nests deeper than {limits.max_json_depth} levels") from error
    except json.JSONDecodeError as error:  # position only: `str(error)` is fine, the document is not in it
        raise OpenAIError(400, f"request body is not valid JSON: {error.msg} at byte {error.pos}") from error
    except UnicodeDecodeError as error:  # its message would quote the bytes
        raise OpenAIError(400, f"request body is not valid UTF-8 at byte {error.start}") from error
    except ValueError as error:  # NaN or Infinity, an integer of more than 4300 digits
        raise OpenAIError(400, f"request body is not valid JSON: {str(error)[:MAX_PATH_CHARS]}") from error
    if not isinstance(payload, dict):
        raise OpenAIError(400, "request body must be a JSON object")
    if json_depth(payload) > limits.max_json_depth:
        raise OpenAIError(400, f"request body nests deeper than {limits.max_json_depth} levels")
    surrogate = _first_lone_surrogate(payload)
    if surrogate is not None:
        param = field_path(surrogate)
        raise OpenAIError(
            400, f"{param or 'request body'}: a string holds a lone UTF-16 surrogate", param=param
        )
    return payload


def validate_body(
    payload: dict[str, Any], model: type[WireT], limits: RequestLimits = DEFAULT_LIMITS
) -> WireT:
    """A decoded body as `model`, or a 400 naming the first offending field (never its value)."""
    try:
        return model.model_validate(payload, context=limits)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        # An unknown field's path is the client's key: named, but cut short like a schema path.
        param = (field_path(first["loc"]) or "")[:MAX_PATH_CHARS] or None
        raise OpenAIError(400, f"{param}: {first['msg']}", param=param) from error


def parse_request(raw: bytes, model: type[WireT], limits: RequestLimits = DEFAULT_LIMITS) -> WireT:
    """Decode and validate a request body, or raise a 4xx naming the first offending field.

    CPU-bound (JSON decoding, JSON-schema checks): the ingress runs it off its event loop.
    """
    return validate_body(decode_body(raw, limits), model, limits)


def sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


# ---------------------------------------------------------------------------------------------
# Framing. The ingress parses every request into one `GenerationRequest`, routes it with the same
# router and records it with the same metrics, whichever API the client speaks (OpenAI's here, or
# Ollama's, translated onto this path by `ollama_protocol`). Only the framing differs: the error
# shape, how stream chunks are written (SSE or NDJSON) and how a stream ends. Each wire format
# implements `Framing` with pure functions of the engine's OpenAI-shaped chunks and of the times
# the ingress measured, so it is tested without Ray.


@dataclass(frozen=True)
class Answer:
    """What a finished request left for metrics, traces, the shadow comparison and the framing."""

    text: str
    usage: dict[str, int]
    finish_reasons: list[str]


@dataclass(frozen=True)
class Timing:
    """When a request arrived and how its time divided, as measured by the ingress."""

    created_at: str  # RFC 3339, UTC
    total_ns: int
    prompt_eval_ns: int  # arrival to the first output token
    eval_ns: int  # first output token to the last


class Framing(Protocol):
    """The wire format of one request's answer."""

    media_type: str  # of a streamed answer
    # A non-streaming answer is decoded as a stream and written whole by `end`; otherwise it is the
    # engine's whole OpenAI-shaped response.
    collects: bool

    def chunk(self, chunk: dict[str, Any], now: str) -> bytes:
        """What one engine stream chunk becomes on the wire (possibly nothing)."""
        ...

    def end(self, answer: Answer, timing: Timing) -> bytes:
        """What ends a stream (or, if `collects`, the whole non-streaming body)."""
        ...

    def stream_error(self, error: OpenAIError) -> bytes:
        """What ends a stream the engine failed in (the status line is already sent)."""
        ...

    def error_body(self, error: OpenAIError) -> dict[str, Any]:
        """An error answered with its HTTP status, in this format's shape."""
        ...


@dataclass(frozen=True)
class OpenAIFraming:
    """OpenAI's framing (`Framing`): JSON answers, SSE streams ending in `[DONE]`."""

    model: str = ""
    include_usage: bool = False
    media_type: str = "text/event-stream"
    collects: bool = False

    def chunk(self, chunk: dict[str, Any], now: str) -> bytes:
        if not chunk["choices"] and not self.include_usage:  # the usage-only chunk, unasked for
            return b""
        return sse_event({**chunk, "model": self.model})

    def end(self, answer: Answer, timing: Timing) -> bytes:
        return SSE_DONE

    def stream_error(self, error: OpenAIError) -> bytes:
        return sse_event(error.body())

    def error_body(self, error: OpenAIError) -> dict[str, Any]:
        return error.body()


def openai_framing(body: ChatCompletionRequest | CompletionRequest) -> OpenAIFraming:
    return OpenAIFraming(body.model, bool(body.stream_options and body.stream_options.include_usage))
