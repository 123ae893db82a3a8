"""Malformed OpenAI requests are refused before any engine is involved, naming the parameter."""

import json

import pytest

from baton_serving.config import EndpointContract, RequestLimits
from baton_serving.openai_protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    OpenAIError,
    parse_request,
)
from baton_serving.wire import field_path

pytestmark = pytest.mark.unit


OPEN = EndpointContract(max_output_tokens=64)
TRIAGE = {"type": "object", "properties": {"urgency": {"enum": ["low", "high"]}}, "required": ["urgency"]}


def chat(**fields) -> bytes:
    return json.dumps(
        {"model": "medical", "messages": [{"role": "user", "content": "hi"}], **fields}
    ).encode()


def test_a_valid_chat_request_becomes_a_generation_request():
    request = parse_request(chat(max_tokens=8, stop="\n"), ChatCompletionRequest)
    generation = request.generation(OPEN, context_length=128)
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


def test_a_schema_pattern_re2_cannot_run_is_a_400_naming_where_never_the_pattern():
    schema = {"type": "object", "properties": {"id": {"type": "string", "pattern": "(a)\\1"}}}
    raw = chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    with pytest.raises(OpenAIError, match=r"\.properties\.id\.pattern: not a linear-time") as error:
        parse_request(raw, ChatCompletionRequest)
    assert (error.value.status, error.value.param) == (400, "response_format.json_schema.schema")
    assert "(a)" not in error.value.body()["error"]["message"]


def test_max_tokens_beyond_the_context_is_refused():
    request = parse_request(
        json.dumps({"model": "m", "prompt": "x", "max_tokens": 10_000}).encode(), CompletionRequest
    )
    with pytest.raises(OpenAIError, match="context length is 128") as error:
        request.generation(EndpointContract(max_output_tokens=100_000), context_length=128)
    assert error.value.param == "max_tokens"


def test_json_schema_response_format_is_passed_as_the_schema():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    request = parse_request(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}}),
        ChatCompletionRequest,
    )
    assert request.generation(OPEN, 128).json_schema == schema
    # The client's own schema wins over the deployment's default.
    assert request.generation(EndpointContract(default_json_schema=TRIAGE), 128).json_schema == schema


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": 65}, "max_tokens"),
        ({"max_completion_tokens": 65, "max_tokens": 8}, "max_completion_tokens"),
    ],
)
def test_max_tokens_beyond_the_deployments_cap_is_refused_naming_the_field(fields, param):
    request = parse_request(chat(**fields), ChatCompletionRequest)
    with pytest.raises(OpenAIError, match="allows at most 64 output tokens") as error:
        request.generation(OPEN, context_length=512)
    assert (error.value.status, error.value.param) == (400, param)
    assert request.generation(EndpointContract(max_output_tokens=65), 512).max_tokens == 65


def test_a_request_that_asks_for_no_length_gets_the_cap_within_half_the_window():
    request = parse_request(chat(), ChatCompletionRequest)
    assert request.generation(OPEN, context_length=512).max_tokens == 64
    assert request.generation(OPEN, context_length=100).max_tokens == 50


def test_the_deployments_schema_constrains_chat_requests_that_send_none():
    contract = EndpointContract(max_output_tokens=64, default_json_schema=TRIAGE)
    assert parse_request(chat(), ChatCompletionRequest).generation(contract, 128).json_schema == TRIAGE
    # `text` is the client's explicit choice of no schema; `json_object` its own loose one.
    text = parse_request(chat(response_format={"type": "text"}), ChatCompletionRequest)
    assert text.generation(contract, 128).json_schema is None
    loose = parse_request(chat(response_format={"type": "json_object"}), ChatCompletionRequest)
    assert loose.generation(contract, 128).json_schema == {"type": "object"}
    completion = parse_request(json.dumps({"model": "m", "prompt": "x"}).encode(), CompletionRequest)
    assert completion.generation(contract, 128).json_schema is None


SECRET = "do-not-echo-4f1c"


def refused(raw: bytes, model=ChatCompletionRequest, limits: RequestLimits | None = None) -> OpenAIError:
    with pytest.raises(OpenAIError) as error:
        parse_request(raw, model, limits or RequestLimits())
    assert SECRET not in json.dumps(error.value.body()), "an error never repeats what was sent"
    return error.value


def nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "array", "items": schema}
    return schema


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        ((b'{"a":' * 5_000) + b"1" + (b"}" * 5_000), 400, None),  # RecursionError in json.loads
        (b'{"model": "m", "prompt": "x", "temperature": NaN}', 400, None),
        (b'{"model": "m", "seed": ' + b"9" * 5_000 + b"}", 400, None),  # int over 4300 digits
        (b'{"model": "m", "prompt": "\\ud800' + SECRET.encode() + b'"}', 400, "prompt"),
        (b"\xff\xfe\xfd" + SECRET.encode(), 400, None),
        (chat(messages=[{"role": "user", "content": "x"}] * 513), 400, "messages"),
        (chat(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
        (chat(stop="s" * 257), 400, "stop"),
        (chat(seed=2**64), 400, "seed"),
        (chat(messages=[{"role": "user", "content": 5}]), 400, "messages[0].content"),
        (
            chat(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": SECRET}}]}]
            ),
            400,
            "messages[0].content[0].type",
        ),
        (chat(messages=[{"role": "user", "content": "x"}, {"role": SECRET}]), 400, "messages[1].role"),
        (
            chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": nested(30)}}),
            400,
            "response_format.json_schema.schema",
        ),
        (
            chat(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"enum": [SECRET * 10] * 500}},
                }
            ),
            400,
            "response_format.json_schema.schema",
        ),
        (
            chat(
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"properties": {"a": {"type": SECRET}}}},
                }
            ),
            400,
            "response_format.json_schema.schema",
        ),
        (b" " * (1_048_576 + 1), 413, None),
    ],
)
def test_hostile_requests_are_4xx_naming_the_field_never_echoing_it(raw, status, param):
    error = refused(raw, CompletionRequest if b'"prompt"' in raw else ChatCompletionRequest)
    assert (error.status, error.param) == (status, param)
    assert error.body()["error"]["type"] == "invalid_request_error"


def test_the_limits_are_the_configured_ones():
    limits = RequestLimits(max_messages=2, max_stop_sequences=1, max_body_bytes=2048)
    assert refused(chat(messages=[{"role": "user", "content": "x"}] * 3), limits=limits).param == "messages"
    assert refused(chat(stop=["a", "b"]), limits=limits).param == "stop"
    assert refused(chat(user="u" * 2048), limits=limits).status == 413
    assert parse_request(chat(stop=["a"]), ChatCompletionRequest, limits).stop == ["a"]


def test_content_part_arrays_are_text():
    raw = chat(
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Chest"}, {"type": "text", "text": "pain"}],
            },
            {"role": "assistant", "content": None, "refusal": None, "tool_calls": None},
        ]
    )
    messages = parse_request(raw, ChatCompletionRequest).generation(OPEN, 128).messages
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Chest\npain"},
        {"role": "assistant", "content": ""},
    ]


def test_field_paths_read_like_the_request():
    assert field_path(("messages", 3, "content", 0, "text")) == "messages[3].content[0].text"
    assert field_path(()) is None
