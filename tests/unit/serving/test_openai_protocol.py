"""Malformed OpenAI requests are refused before any engine is involved, naming the parameter."""

import json

import pytest

from baton_serving.openai_protocol import ChatCompletionRequest, CompletionRequest, OpenAIError, parse_request

pytestmark = pytest.mark.unit


def chat(**fields) -> bytes:
    return json.dumps(
        {"model": "medical", "messages": [{"role": "user", "content": "hi"}], **fields}
    ).encode()


def test_a_valid_chat_request_becomes_a_generation_request():
    request = parse_request(chat(max_tokens=8, stop="\n"), ChatCompletionRequest)
    generation = request.generation(context_length=128)
    assert generation.kind == "chat" and generation.max_tokens == 8 and generation.stop == ["\n"]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (chat(temperature=7), "temperature"),
        (chat(n=3), "n"),
        (chat(unexpected=True), "unexpected"),
        (
            chat(
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}
            ),
            "response_format.json_schema.schema",
        ),
    ],
)
def test_malformed_requests_are_400_with_the_parameter(raw, param):
    with pytest.raises(OpenAIError) as error:
        parse_request(raw, ChatCompletionRequest)
    assert error.value.status == 400
    assert error.value.param == param
    assert error.value.body()["error"]["type"] == "invalid_request_error"


def test_max_tokens_beyond_the_context_is_refused():
    request = parse_request(
        json.dumps({"model": "m", "prompt": "x", "max_tokens": 10_000}).encode(), CompletionRequest
    )
    with pytest.raises(OpenAIError, match="context length is 128") as error:
        request.generation(context_length=128)
    assert error.value.param == "max_tokens"


def test_json_schema_response_format_is_passed_as_the_schema():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    request = parse_request(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}}),
        ChatCompletionRequest,
    )
    assert request.generation(128).json_schema == schema
