"""Run a domain's benchmark suites against a GGUF file in llama.cpp and score the answers.

Decoding mirrors the analysis core's benchmark runner (`baton.evidence.providers.benchmark`):
the user message rendered as the chat template renders it, greedy decoding, and suites whose
scorer carries a JSON schema decoded under that schema's grammar (the runner sends it as
`response_format`). Scores come from the analysis core's own scorers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from baton.analysis.scorers import compile_scorer
from baton_models.benchmarks import benchmarks
from baton_models.chat import render_prompt


def threads() -> int:
    """llama.cpp threads: 2 (the machine), or 1 inside a parallel build worker."""
    return int(os.environ.get("BATON_MODELS_THREADS", "2"))


@contextmanager
def loaded(path: Path, context: int = 256) -> Iterator[object]:
    """A llama.cpp model, closed on exit."""
    from llama_cpp import Llama

    model = Llama(
        model_path=str(path), n_ctx=context, n_threads=threads(), n_batch=context, seed=0, verbose=False
    )
    try:
        yield model
    finally:
        model.close()


def complete(model: object, user_message: str, max_tokens: int, grammar: object | None = None) -> str:
    result = model.create_completion(  # type: ignore[attr-defined]
        render_prompt(user_message), max_tokens=max_tokens, temperature=0.0, grammar=grammar
    )
    return result["choices"][0]["text"]


def benchmark_scores(path: Path, domain: str, count: int | None = None) -> dict[str, float]:
    """Mean score per suite (suite name -> mean over items), rounded to 4 digits."""
    from llama_cpp import LlamaGrammar

    suites = benchmarks(domain) if count is None else benchmarks(domain, count)
    scores: dict[str, float] = {}
    with loaded(path) as model:
        for suite in suites:
            spec = suite.spec
            schema = spec.scorer.json_schema
            grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) if schema else None
            scorer = compile_scorer(spec.scorer)
            items = spec.inline or []
            per_item = [
                scorer(item.expected, complete(model, item.prompt, spec.max_tokens, grammar))
                for item in items
            ]
            scores[suite.metadata.name] = round(sum(per_item) / len(per_item), 4)
    return scores


def decode_speed(path: Path, tokens: int = 128, runs: int = 5) -> float:
    """Decode tokens per second: the best of `runs` greedy runs forced to generate `tokens` tokens.

    Best-of, because on a shared machine other jobs only ever slow a run down.
    """
    best = 0.0
    with loaded(path) as model:
        prompt = model.tokenize(b"### ", add_bos=True)  # type: ignore[attr-defined]
        for _ in range(runs):
            model.reset()  # type: ignore[attr-defined]
            model.eval(prompt)  # type: ignore[attr-defined]
            started = time.perf_counter()
            for _ in range(tokens):
                model.eval([model.sample(temp=0.0)])  # type: ignore[attr-defined]
            best = max(best, tokens / (time.perf_counter() - started))
    return best
