"""How a wire format writes what the ingress's one request path produced.

The ingress parses every request into one `GenerationRequest`, routes it with the same router and
records it with the same metrics, whichever API the client speaks (OpenAI's or Ollama's). Only the
framing differs: the error shape, how stream chunks are written (SSE or NDJSON) and how a stream
ends. Each wire format implements `Framing` with pure functions of the engine's OpenAI-shaped
chunks and of the times the ingress measured, so it is unit-tested without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from baton_serving.openai_protocol import OpenAIError


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
