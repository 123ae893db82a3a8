"""The vLLM engine replica's translation to and from vLLM's OpenAI protocol (no vLLM or GPU needed)."""

import json

import pytest

from baton_serving.engines import EngineRequestError, GenerationRequest
from baton_serving.engines.vllm import openai_body, raise_for_error, stream_chunks

pytestmark = pytest.mark.unit


def sse(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


def chunk(content: str | None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = (
        [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    )
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": choices, "usage": usage}


def test_a_chat_request_becomes_vllm_s_body_with_the_schema_as_response_format() -> None:
    schema = {"type": "object", "properties": {"icd10": {"type": "string"}}, "required": ["icd10"]}
    request = GenerationRequest(
        kind="chat",
        max_tokens=32,
        messages=[{"role": "user", "content": "code?"}],
        json_schema=schema,
        seed=7,
    )
    body = openai_body("medical", request, stream=True)
    assert body["model"] == "medical" and body["messages"] == request.messages and "prompt" not in body
    assert (body["max_tokens"], body["seed"], body["stream"]) == (32, 7, True)
    assert body["stream_options"] == {"include_usage": True}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }


def test_a_completion_request_sends_its_prompt_and_no_stream_options_when_unary() -> None:
    body = openai_body(
        "medical", GenerationRequest(kind="completion", max_tokens=8, prompt="Triage:"), stream=False
    )
    assert body["prompt"] == "Triage:" and "messages" not in body
    assert "stream_options" not in body and "response_format" not in body


def test_stream_batches_become_chunks_ending_with_usage() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    batch = [
        sse(chunk("Chest")) + sse(chunk(" pain", "stop")),
        sse(chunk(None, usage=usage)),
        "data: [DONE]\n\n",
    ]
    chunks = stream_chunks(batch)
    assert [c["choices"][0]["delta"]["content"] for c in chunks[:2]] == ["Chest", " pain"]
    assert "usage" not in chunks[0]  # `usage: null` dropped, as in llama.cpp's chunks
    assert chunks[-1] == {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": usage,
    }


@pytest.mark.parametrize(
    ("payload", "raised"),
    [
        (
            {"error": {"message": "max_tokens is too large", "type": "BadRequestError", "code": 400}},
            EngineRequestError,
        ),
        (
            {"object": "error", "message": "prompt too long", "type": "BadRequestError", "code": 400},
            EngineRequestError,
        ),  # older vLLM
        ({"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}, RuntimeError),
    ],
)
def test_vllm_errors_are_client_errors_only_when_vllm_says_4xx(payload, raised) -> None:
    with pytest.raises(raised) as error:
        raise_for_error(payload)
    assert type(error.value) is raised
    with pytest.raises(raised):
        stream_chunks([sse(chunk("a")), sse(payload)])


def test_top_k_and_repeat_penalty_reach_vllm_under_its_names_and_only_when_set() -> None:
    plain = openai_body(
        "medical", GenerationRequest(kind="completion", max_tokens=4, prompt="x"), stream=False
    )
    assert "top_k" not in plain and "repetition_penalty" not in plain
    tuned = GenerationRequest(kind="completion", max_tokens=4, prompt="x", top_k=5, repeat_penalty=1.3)
    body = openai_body("medical", tuned, stream=False)
    assert (body["top_k"], body["repetition_penalty"]) == (5, 1.3) and "repeat_penalty" not in body
