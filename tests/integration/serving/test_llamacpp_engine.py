"""The llama.cpp engine serves every GGUF type the factory makes, streams with usage, and constrains JSON."""

from __future__ import annotations

import json
import time

import jsonschema
import pytest

from baton_serving.artifacts import fetch_verified
from baton_serving.config import RequestLimits
from baton_serving.engines import EngineRequestError, GenerationRequest
from baton_serving.engines.grammar import GrammarBuilder
from baton_serving.engines.llamacpp import LlamaCppEngine
from tests.policies import opted_in

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {"urgency": {"enum": ["low", "high"]}, "regression": {"type": "boolean"}},
    "required": ["urgency", "regression"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module", params=["F16", "Q8_0", "Q4_K_M", "TQ2_0", "TQ1_0"])
def engine(request, model_artifact) -> LlamaCppEngine:
    artifact = model_artifact("medical", "smoke", request.param)
    verified = fetch_verified(str(artifact.path), artifact.digest, opted_in())
    return LlamaCppEngine(verified.path, context_length=128, threads=1)


def test_generates_and_streams_with_usage(engine):
    chat = GenerationRequest(kind="chat", messages=[{"role": "user", "content": "Fever."}], max_tokens=6)
    whole = engine.generate(chat)
    assert whole["usage"]["completion_tokens"] >= 1
    chunks = list(engine.stream(chat))
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6


def test_json_schema_output_is_valid(engine):
    request = GenerationRequest(
        kind="chat", messages=[{"role": "user", "content": "Triage."}], max_tokens=100, json_schema=SCHEMA
    )
    text = engine.generate(request)["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(text), SCHEMA)


def test_a_prompt_longer_than_the_context_is_a_request_error(engine):
    request = GenerationRequest(kind="completion", prompt="word " * 400, max_tokens=4)
    with pytest.raises(EngineRequestError, match="exceed context window"):
        engine.generate(request)
    with pytest.raises(EngineRequestError, match="exceed context window"):
        list(engine.stream(request))


def test_a_response_schema_is_refused_at_the_grammar_deadline_and_the_next_one_builds():
    builder = GrammarBuilder(RequestLimits(grammar_timeout_s=2))
    try:
        started = time.monotonic()
        # The converter writes out 30 million items: minutes of work, stopped at the deadline.
        slow = {"type": "array", "items": {"type": "integer"}, "minItems": 30_000_000}
        with pytest.raises(EngineRequestError, match=r"took longer than 2\.0 s") as refused:
            builder.gbnf(json.dumps(slow))
        assert refused.value.param == "response_format.json_schema.schema"
        assert time.monotonic() - started < 60
        with pytest.raises(EngineRequestError, match="nested deeper than 256"):
            builder.gbnf(json.dumps({"type": "string", "maxLength": 1_000}))
        assert "root ::=" in builder.gbnf(json.dumps(SCHEMA))
        started = time.monotonic()
        with pytest.raises(EngineRequestError, match="took longer"):
            builder.gbnf(json.dumps(slow))  # a refusal is cached: no second deadline
        assert time.monotonic() - started < 0.5
    finally:
        builder.close()
