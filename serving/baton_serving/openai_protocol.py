"""The OpenAI wire format the ingress accepts: request bodies, the error shape and SSE framing.

Requests are validated here, before any engine is involved, so a malformed request costs nothing
and gets a 4xx in OpenAI's error shape naming the offending parameter.
"""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from baton_serving.engines import GenerationRequest

DEFAULT_MAX_TOKENS = 256


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self, status: int, message: str, error_type: str = "invalid_request_error", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {"message": self.message, "type": self.error_type, "param": self.param, "code": None}
        }


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


WireT = TypeVar("WireT", bound=_Wire)


class JsonSchemaFormat(_Wire):
    """`response_format.json_schema`: the schema the answer must follow."""

    name: str = Field(description="Name of the schema.")
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema.")
    strict: bool | None = Field(
        default=None, description="Accepted for compatibility; output is always constrained."
    )
    description: str | None = Field(default=None, description="What the schema describes.")

    @field_validator("schema_")
    @classmethod
    def _is_a_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as error:
            raise ValueError(f"not a valid JSON Schema: {error.message}") from error
        return schema


class ResponseFormat(_Wire):
    """`response_format`: plain text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"] = Field(description="Kind of output.")
    json_schema: JsonSchemaFormat | None = Field(default=None, description="Required for `json_schema`.")


class StreamOptions(_Wire):
    include_usage: bool = Field(default=False, description="Send a final chunk with token usage.")


class _SamplingRequest(_Wire):
    model: str = Field(description="The deployment name.")
    max_tokens: int | None = Field(default=None, ge=1, description="Upper bound on output tokens.")
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling mass.")
    n: int = Field(default=1, ge=1, le=1, description="Number of choices; only 1 is supported.")
    stop: str | list[str] | None = Field(default=None, description="Stop sequences.")
    seed: int | None = Field(default=None, description="Sampling seed.")
    stream: bool = Field(default=False, description="Answer as server-sent events.")
    stream_options: StreamOptions | None = Field(default=None, description="Streaming options.")
    user: str | None = Field(default=None, description="End-user id (not logged).")
    presence_penalty: float = Field(default=0.0, ge=-2, le=2, description="Accepted; not applied.")
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2, description="Accepted; not applied.")

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"] = Field(description="Author role.")
    content: str | None = Field(default=None, description="Message text.")


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Newer name of `max_tokens`.")
    response_format: ResponseFormat | None = Field(default=None, description="Structured output.")

    def json_schema(self) -> dict[str, Any] | None:
        if self.response_format is None or self.response_format.type == "text":
            return None
        if self.response_format.type == "json_object":
            return {"type": "object"}
        if self.response_format.json_schema is None:
            raise OpenAIError(
                400, "response_format.json_schema is required", param="response_format.json_schema"
            )
        return self.response_format.json_schema.schema_

    def generation(self, context_length: int) -> GenerationRequest:
        return GenerationRequest(
            kind="chat",
            messages=[message.model_dump(exclude_none=True) for message in self.messages],
            max_tokens=checked_max_tokens(self.max_completion_tokens or self.max_tokens, context_length),
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop_list(),
            seed=self.seed,
            json_schema=self.json_schema(),
        )


class CompletionRequest(_SamplingRequest):
    prompt: str = Field(description="The text to continue.")

    def generation(self, context_length: int) -> GenerationRequest:
        return GenerationRequest(
            kind="completion",
            prompt=self.prompt,
            max_tokens=checked_max_tokens(self.max_tokens, context_length),
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop_list(),
            seed=self.seed,
        )


def checked_max_tokens(requested: int | None, context_length: int) -> int:
    if requested is None:
        return min(DEFAULT_MAX_TOKENS, context_length // 2)
    if requested >= context_length:
        raise OpenAIError(
            400,
            f"max_tokens is {requested}, but this model's context length is {context_length} tokens "
            "(prompt and completion together)",
            param="max_tokens",
        )
    return requested


def parse_request(raw: bytes, model: type[WireT]) -> WireT:
    """Decode and validate a request body, or raise a 400 naming the first offending parameter."""
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OpenAIError(400, f"request body is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise OpenAIError(400, "request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise OpenAIError(400, f"{param}: {first['msg']}", param=param) from error


def sse_event(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"
