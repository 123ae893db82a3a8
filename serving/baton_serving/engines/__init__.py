"""The small protocol every inference engine implements, so the ingress never cares which one runs.

An engine takes a `GenerationRequest` and returns OpenAI-shaped dicts (a whole response, or stream
chunks ending with a usage-only chunk). llama.cpp implements it over a llama-server process the
replica supervises (`llamacpp.py`); vLLM pools run Ray Serve LLM's own server, configured by `vllm.py`.
Both methods are coroutines: the engine answers many requests at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

# The request field a response schema arrives in, named by errors about it on both sides of Ray.
SCHEMA_PARAM = "response_format.json_schema.schema"


# The key under which a whole (unary) response may carry how long decoding took after its first
# token, in seconds (llama-server's own `timings.predicted_ms`). The ingress takes it off before
# answering: with it, a unary answer's time to first token is its latency at the ingress minus that.
DECODE_AFTER_FIRST_TOKEN_KEY = "baton_decode_after_first_token_s"


class EngineRequestError(ValueError):
    """The request cannot be served by this engine (e.g. a schema it cannot compile): a client error.

    `param` is the request field at fault, for the OpenAI error body.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        # Ray pickles an engine's exception to the ingress; the default would drop `param`.
        return (type(self), (str(self), self.param))


class EngineUnavailableError(RuntimeError):
    """The revision's engine cannot answer now: it refused its artifact, or its server is restarting."""


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate; `messages` for chat, `prompt` for plain completions."""

    kind: Literal["chat", "completion"]
    max_tokens: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompt: str = ""
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # None: the engine's default
    repeat_penalty: float | None = None  # None: the engine's default; each engine has its own name
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    json_schema: dict[str, Any] | None = None

    def sampling(self, stream: bool) -> dict[str, Any]:
        """The sampling arguments both engines take under these names (top_k only when set)."""
        arguments: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": self.stop,
            "seed": self.seed,
            "stream": stream,
        }
        if self.top_k is not None:
            arguments["top_k"] = self.top_k
        return arguments


# What the llama.cpp engine samples with when a request leaves these unset, passed explicitly so that
# `baton export` can write the same values into an Ollama Modelfile (Ollama's own defaults differ).
LLAMA_CPP_SAMPLING_DEFAULTS: dict[str, float] = {"top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0}


class Engine(Protocol):
    """A loaded model that answers generation requests, many at once."""

    async def generate(self, request: GenerationRequest) -> dict[str, Any]:
        """The whole OpenAI-shaped response, with `usage` (and `DECODE_AFTER_FIRST_TOKEN_KEY` if known)."""
        ...

    def stream(self, request: GenerationRequest) -> AsyncIterator[dict[str, Any]]:
        """OpenAI-shaped stream chunks, then one chunk with empty `choices` and the `usage`."""
        ...
