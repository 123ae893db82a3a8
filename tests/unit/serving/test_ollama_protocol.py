"""Ollama's wire format: translated into the one OpenAI request path, and framed back (no Ray)."""

from __future__ import annotations

import json

import pytest

from baton_serving.config import DeploymentRoute, EndpointContract, RequestLimits
from baton_serving.engines import GenerationRequest
from baton_serving.ollama_protocol import (
    OllamaChatRequest,
    OllamaFraming,
    OllamaGenerateRequest,
    OllamaShowRequest,
    deployment_of,
    ollama_error,
    parse_ollama,
    primary_revision,
    running,
    show,
    tags,
)
from baton_serving.openai_protocol import Answer, OpenAIError, Timing, parse_request

pytestmark = pytest.mark.unit

LIMITS = RequestLimits()
CONTRACT = EndpointContract()
CONTEXT = 256
SECRET = "do-not-echo-7f3a"
DIGEST = "sha256:" + "ab" * 32


def generation(body: dict, wire=OllamaChatRequest) -> GenerationRequest:
    request = parse_ollama(json.dumps(body).encode(), wire, LIMITS)
    assert request.openai is not None
    return request.openai.generation(CONTRACT, CONTEXT)


def refusal(body: dict | bytes, wire=OllamaChatRequest) -> OpenAIError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(OpenAIError) as error:
        request = parse_ollama(raw, wire, LIMITS)
        assert request.openai is not None
        request.openai.generation(CONTRACT, CONTEXT)
    return ollama_error(error.value)


def test_a_chat_with_options_and_a_schema_becomes_one_generation_request():
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    request = generation(
        {
            "model": "medical:latest",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Age?", "images": []},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]},
                {"role": "tool", "content": None, "tool_name": "f"},
            ],
            "format": schema,
            "options": {
                "temperature": 0.2,
                "top_p": 0.9,
                "top_k": 5,
                "seed": 42,
                "num_predict": 12,
                "stop": ["\n"],
                "repeat_penalty": 1.3,
                "num_ctx": 4096,  # a load-time option: accepted, the revision's context applies
                "mirostat": 1,
            },
            "keep_alive": "5m",
            "tools": [],
            "think": False,
        }
    )
    assert request.kind == "chat" and request.json_schema == schema
    assert request.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Age?"},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": ""},
    ]
    assert (request.temperature, request.top_p, request.top_k, request.seed) == (0.2, 0.9, 5, 42)
    assert (request.max_tokens, request.stop, request.repeat_penalty) == (12, ["\n"], 1.3)


def test_ollama_defaults_and_sentinels_leave_the_engine_defaults():
    request = generation(
        {
            "model": "medical",
            "messages": [{"role": "user", "content": "x"}],
            "options": {"seed": -1, "num_predict": -1},
        }
    )
    default = generation({"model": "medical", "messages": [{"role": "user", "content": "x"}]})
    assert request == default
    assert (default.seed, default.top_k, default.repeat_penalty) == (None, None, None)
    assert default.max_tokens == CONTEXT // 2 and default.temperature == 1.0


def test_format_json_is_any_object():
    assert generation(
        {"model": "medical", "messages": [{"role": "user", "content": "x"}], "format": "json"}
    ).json_schema == {"type": "object"}
    assert (
        generation(
            {"model": "medical", "messages": [{"role": "user", "content": "x"}], "format": ""}
        ).json_schema
        is None
    )


def test_generate_uses_the_chat_template_unless_raw():
    templated = generation(
        {"model": "medical", "prompt": "Once", "system": "Be brief."}, OllamaGenerateRequest
    )
    assert templated.kind == "chat"
    assert templated.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Once"},
    ]
    raw = generation({"model": "medical", "prompt": "Once", "raw": True}, OllamaGenerateRequest)
    assert (raw.kind, raw.prompt) == ("completion", "Once")


def test_no_messages_or_no_prompt_only_loads_the_model():
    for wire, body in (
        (OllamaChatRequest, {"model": "medical"}),
        (OllamaGenerateRequest, {"model": "medical", "prompt": ""}),
    ):
        request = parse_ollama(json.dumps(body).encode(), wire, LIMITS)
        assert request.openai is None and request.wire.stream is True


def test_model_names_take_the_latest_tag_only():
    assert deployment_of("medical") == deployment_of("medical:latest") == "medical"
    assert deployment_of("medical:v2") == "medical:v2"  # matches no deployment: a 404
    assert OllamaShowRequest(name="medical:latest").deployment() == "medical"
    with pytest.raises(OpenAIError) as error:
        OllamaShowRequest().deployment()
    assert error.value.status == 400


@pytest.mark.parametrize(
    ("body", "wire", "param"),
    [
        (
            {
                "model": "medical",
                "messages": [{"role": "user", "content": "x"}],
                "options": {"temperature": 9},
            },
            OllamaChatRequest,
            "options.temperature",
        ),
        (
            {"model": "medical", "prompt": "x", "options": {"num_predict": 0}},
            OllamaGenerateRequest,
            "options.num_predict",
        ),
        (
            {"model": "medical", "prompt": "x", "options": {"num_predict": 10**6}},
            OllamaGenerateRequest,
            "options.num_predict",
        ),
        (
            {"model": "medical", "prompt": "x", "options": {"stop": ["a"] * 9}},
            OllamaGenerateRequest,
            "options.stop",
        ),
        (
            {"model": "medical", "prompt": "x", "options": {"stop": [SECRET * 20]}},
            OllamaGenerateRequest,
            "options.stop",
        ),
        (
            {"model": "medical", "prompt": "x", "options": {"top_k": 2**40}},
            OllamaGenerateRequest,
            "options.top_k",
        ),
        (
            {"model": "medical", "prompt": "x", "options": {SECRET: 1}},
            OllamaGenerateRequest,
            f"options.{SECRET}",
        ),
        ({"model": "medical", "prompt": "x", "format": {"type": SECRET}}, OllamaGenerateRequest, "format"),
        ({"model": "medical", "prompt": "x", "format": SECRET}, OllamaGenerateRequest, "format"),
        ({"model": "medical", "prompt": "x", "suffix": SECRET}, OllamaGenerateRequest, "suffix"),
        ({"model": "medical", "prompt": "x", "template": SECRET}, OllamaGenerateRequest, "template"),
        ({"model": "medical", "prompt": "x", "context": [1, 2]}, OllamaGenerateRequest, "context"),
        ({"model": "medical", "prompt": "x", "images": [SECRET]}, OllamaGenerateRequest, "images"),
        ({"model": "medical", "messages": [], "tools": [{"n": SECRET}]}, OllamaChatRequest, "tools"),
        ({"model": "medical", "messages": [], "think": "high"}, OllamaChatRequest, "think"),
        ({"model": "medical", "messages": [], "logprobs": True}, OllamaChatRequest, "logprobs"),
        (
            {"model": "medical", "messages": [{"role": "user", "images": [SECRET]}]},
            OllamaChatRequest,
            "messages[0].images",
        ),
        ({"model": "medical", "messages": [{"role": SECRET}]}, OllamaChatRequest, "messages[0].role"),
        ({"model": "medical", "messages": [], "keep_alive": [SECRET]}, OllamaChatRequest, "keep_alive"),
        ({"model": "", "messages": []}, OllamaChatRequest, "model"),
        ({"messages": []}, OllamaChatRequest, "model"),
        ({"model": "medical", "messages": [], "width": 5}, OllamaChatRequest, "width"),
    ],
)
def test_bad_requests_are_400_naming_the_ollama_field_never_its_value(body, wire, param):
    error = refusal(body, wire)
    assert error.status == 400 and error.param == param, (error.param, error.message)
    framed = OllamaFraming("chat").error_body(error)
    assert set(framed) == {"error"} and framed["error"].startswith(param)
    assert SECRET not in framed["error"].removeprefix(param)


def test_an_unknown_key_is_named_but_cut_short():
    error = refusal({"model": "medical", "prompt": "x", "options": {"k" * 5000: 1}}, OllamaGenerateRequest)
    assert error.status == 400 and error.param.startswith("options.k") and len(error.param) <= 120


def test_body_level_limits_are_the_shared_ones():
    assert refusal(b"x" * (LIMITS.max_body_bytes + 1)).status == 413
    assert refusal(b"{not json").status == 400
    assert refusal(b'{"model": "medical", "prompt": "\\ud800"}', OllamaGenerateRequest).param == "prompt"
    deep = '{"model": "medical", "format": ' + "[" * 100 + "]" * 100 + "}"
    assert "nests deeper" in refusal(deep.encode(), OllamaGenerateRequest).message


def test_engine_errors_name_the_ollama_field():
    schema_error = OpenAIError(
        400, "response_format.json_schema.schema: too deep", param="response_format.json_schema.schema"
    )
    assert (ollama_error(schema_error).param, ollama_error(schema_error).message) == (
        "format",
        "format: too deep",
    )
    unrelated = OpenAIError(503, "revision 'v2' of 'medical' is not serving", "service_unavailable")
    assert ollama_error(unrelated) is unrelated


def chunk(text: str | None, finish: str | None = None, usage: dict | None = None) -> dict:
    choices = [] if text is None else [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": choices,
        **({"usage": usage} if usage else {}),
    }


TIMING = Timing(created_at="2026-12-02T10:00:00.5Z", total_ns=900, prompt_eval_ns=200, eval_ns=700)
ANSWER = Answer("Hello there", {"prompt_tokens": 5, "completion_tokens": 2}, ["length"])


def test_a_stream_is_ndjson_ending_with_the_done_line():
    framing = OllamaFraming("chat", "medical:latest")
    lines = [
        framing.chunk(c, "2026-12-02T10:00:01Z")
        for c in (chunk(""), chunk("Hello"), chunk(" there", "length"), chunk(None, usage={}))
    ]
    assert lines[0] == lines[3] == b""  # role-only and usage-only chunks send nothing
    assert json.loads(lines[1]) == {
        "model": "medical:latest",
        "created_at": "2026-12-02T10:00:01Z",
        "message": {"role": "assistant", "content": "Hello"},
        "done": False,
    }
    end = framing.end(ANSWER, TIMING)
    assert end.endswith(b"\n") and end.count(b"\n") == 1
    assert json.loads(end) == {
        "model": "medical:latest",
        "created_at": "2026-12-02T10:00:00.5Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "length",
        "total_duration": 900,
        "load_duration": 0,
        "prompt_eval_count": 5,
        "prompt_eval_duration": 200,
        "eval_count": 2,
        "eval_duration": 700,
    }


def test_a_whole_answer_is_one_object_with_the_text():
    framing = OllamaFraming("generate", "medical", stream=False)
    assert framing.collects and framing.chunk(chunk("Hello"), "t") == b""
    whole = json.loads(framing.end(ANSWER, TIMING))
    assert whole["response"] == "Hello there" and whole["done"] is True and "message" not in whole
    loaded = json.loads(framing.end(Answer("", {}, ["load"]), TIMING))
    assert (loaded["done_reason"], loaded["response"], loaded["eval_count"]) == ("load", "", 0)


def test_an_error_inside_a_stream_is_an_error_line():
    line = OllamaFraming("chat").stream_error(
        OpenAIError(500, "the engine failed: RuntimeError", "server_error")
    )
    assert json.loads(line) == {"error": "the engine failed: RuntimeError"}


def route(weights: dict[str, float]) -> DeploymentRoute:
    return DeploymentRoute.model_validate(
        {
            "name": "medical",
            "revisions": [
                {
                    "name": "v1",
                    "engine": "llamacpp",
                    "context_length": 256,
                    "digest": DIGEST,
                    "quantization": "Q8_0",
                    "size_bytes": 10,
                },
                {"name": "v2", "engine": "llamacpp", "context_length": 512},
            ],
            "route": {"weights": weights},
        }
    )


def test_listings_describe_the_revision_with_most_traffic():
    assert primary_revision(route({"v1": 90, "v2": 10})).name == "v1"
    assert primary_revision(route({"v1": 10, "v2": 90})).name == "v2"
    assert primary_revision(route({"v1": 50, "v2": 50})).name == "v1"  # the first declared of equals
    [listed] = tags([(route({"v1": 90, "v2": 10}), "2026-12-02T10:00:00Z")])["models"]
    assert listed == {
        "name": "medical:latest",
        "model": "medical:latest",
        "modified_at": "2026-12-02T10:00:00Z",
        "size": 10,
        "digest": "ab" * 32,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "Q8_0",
        },
    }
    [loaded] = running([(route({"v2": 1}), "t")])["models"]
    assert (loaded["context_length"], loaded["size_vram"], loaded["digest"]) == (512, 0, "")
    shown = show(route({"v1": 1}), "t")
    assert shown["parameters"] == "num_ctx 256" and shown["capabilities"] == ["completion"]
    assert "model_info" in shown and shown["details"]["quantization_level"] == "Q8_0"


def test_the_show_request_is_validated_like_any_body():
    assert (
        parse_request(b'{"model": "medical", "verbose": true}', OllamaShowRequest, LIMITS).deployment()
        == "medical"
    )
    with pytest.raises(OpenAIError):
        parse_request(b'{"model": "medical", "x": 1}', OllamaShowRequest, LIMITS)
