"""Request spans carry GenAI semantic-convention attributes, and content only when asked for."""

import json

import pytest

from baton_serving.config import TracingConfig
from baton_serving.tracing import RequestTracer

pytestmark = pytest.mark.unit


def traced(tmp_path, record_content: bool) -> dict:
    path = tmp_path / "spans.jsonl"
    tracer = RequestTracer(
        TracingConfig(enabled=True, jsonl_path=str(path), record_content=record_content), "pool-a"
    )
    span = tracer.start_request_span("chat", "medical", {"max_tokens": 8, "temperature": 0.0, "top_p": None})
    usage = {"prompt_tokens": 11, "completion_tokens": 7}
    tracer.record_answer(
        span,
        "v2",
        usage,
        ["stop"],
        prompt=[{"role": "user", "content": "SECRET-PROMPT"}],
        completion="SECRET-ANSWER",
    )
    span.end()
    [record] = [json.loads(line) for line in path.read_text().splitlines()]
    return record


def test_span_has_genai_attributes_and_no_content_by_default(tmp_path):
    record = traced(tmp_path, record_content=False)
    attributes = record["attributes"]
    assert record["name"] == "chat medical"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "medical"
    assert attributes["gen_ai.response.model"] == "v2"
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.request.max_tokens"] == 8
    assert "gen_ai.request.top_p" not in attributes
    assert "SECRET" not in json.dumps(record)


def test_content_is_recorded_only_when_enabled(tmp_path):
    record = traced(tmp_path, record_content=True)
    assert "SECRET-PROMPT" in record["attributes"]["gen_ai.input.messages"]
    assert "SECRET-ANSWER" in record["attributes"]["gen_ai.output.messages"]


def test_disabled_tracing_records_nothing(tmp_path):
    tracer = RequestTracer(TracingConfig(enabled=False, jsonl_path=str(tmp_path / "x.jsonl")), "pool-a")
    span = tracer.start_request_span("chat", "medical", {})
    assert not span.is_recording()
    assert not (tmp_path / "x.jsonl").exists()
