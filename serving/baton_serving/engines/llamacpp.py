"""llama.cpp engine: serves one GGUF (F16, Q8_0, Q4_K_M, ternary TQ2_0/TQ1_0, ...) in-process on CPU.

Built on llama-cpp-python's high-level `Llama`. JSON-schema response formats become GBNF grammars
(built under the pool's limits, `grammar.py`), so structured output is constrained while it is
generated, not checked afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from llama_cpp import Llama, LlamaGrammar, LogitsProcessorList

from baton_serving.config import RequestLimits
from baton_serving.engines import LLAMA_CPP_SAMPLING_DEFAULTS, EngineRequestError, GenerationRequest
from baton_serving.engines.grammar import GrammarBuilder


class _SampleCounter:
    """A logits processor that counts sampling steps and sees the prompt length at the first step.

    Streamed llama.cpp responses carry no usage; this is how the stream's usage is measured.
    """

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.sampled = 0

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.sampled == 0:
            self.prompt_tokens = len(input_ids)
        self.sampled += 1
        return scores


class LlamaCppEngine:
    """One loaded GGUF. Not thread-safe: the caller runs one request at a time."""

    def __init__(
        self, model_path: Path, context_length: int, threads: int, limits: RequestLimits | None = None
    ) -> None:
        self.context_length = context_length
        self._grammars = GrammarBuilder(limits or RequestLimits())
        self._llama = Llama(
            model_path=str(model_path),
            n_ctx=context_length,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def generate(self, request: GenerationRequest) -> dict[str, Any]:
        return self._run(request, stream=False)

    def stream(self, request: GenerationRequest) -> Iterator[dict[str, Any]]:
        counter = _SampleCounter()
        finish_reason = None
        last: dict[str, Any] = {}
        chunks = self._run(request, stream=True, logits_processor=LogitsProcessorList([counter]))
        try:
            for chunk in chunks:
                last = chunk
                finish_reason = chunk["choices"][0].get("finish_reason") or finish_reason
                yield chunk
        except ValueError as error:  # raised at the first step for a prompt longer than the context
            raise EngineRequestError(str(error)) from error
        # The step that sampled the end-of-sequence token produced no output token.
        completion_tokens = max(counter.sampled - (1 if finish_reason == "stop" else 0), 0)
        yield {
            "id": last.get("id", ""),
            "object": last.get("object", ""),
            "created": last.get("created", 0),
            "choices": [],
            "usage": {
                "prompt_tokens": counter.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": counter.prompt_tokens + completion_tokens,
            },
        }

    def _run(self, request: GenerationRequest, stream: bool, logits_processor: Any = None) -> Any:
        options: dict[str, Any] = {
            **LLAMA_CPP_SAMPLING_DEFAULTS,
            **request.sampling(stream),
            "logits_processor": logits_processor,
        }
        if request.repeat_penalty is not None:
            options["repeat_penalty"] = request.repeat_penalty
        if request.json_schema is not None:
            # Key order is part of the contract: the grammar makes the model write fields in the
            # schema's order, so the schema text must not be re-sorted (it also keys the cache).
            options["grammar"] = LlamaGrammar.from_string(
                self._grammars.gbnf(json.dumps(request.json_schema))
            )
        try:
            if request.kind == "chat":
                return self._llama.create_chat_completion(messages=request.messages, **options)
            return self._llama.create_completion(prompt=request.prompt, **options)
        except ValueError as error:  # llama-cpp-python's error for a prompt longer than the context
            raise EngineRequestError(str(error)) from error
