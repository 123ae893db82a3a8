"""OpenTelemetry spans of inference requests, with the GenAI semantic-convention attributes.

One span per request: model (deployment), answering revision, token usage, finish reasons. Prompts
and completions are never put on a span unless `TracingConfig.record_content` is set: they may hold
personal or confidential data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode

from baton_serving.config import TracingConfig

GEN_AI_PROVIDER = "baton"


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line: local debugging without a collector."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._path.open("a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(_span_record(span)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def _span_record(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class RequestTracer:
    """Starts request spans on a tracer provider of its own (or a no-op one when tracing is off)."""

    def __init__(self, config: TracingConfig, pool: str) -> None:
        self.record_content = config.record_content
        self._provider: TracerProvider | None = None
        if not config.enabled:
            return
        provider = TracerProvider(
            resource=Resource.create({"service.name": "baton-serving", "baton.pool": pool})
        )
        if config.jsonl_path:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(Path(config.jsonl_path))))
        if config.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint)))
        self._provider = provider

    def start_request_span(self, operation: str, model: str, parameters: dict[str, Any]) -> Span:
        """A span `{operation} {model}` with the request attributes known up front; the caller ends it."""
        if self._provider is None:
            return NonRecordingSpan(trace.INVALID_SPAN_CONTEXT)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": GEN_AI_PROVIDER,
            "gen_ai.request.model": model,
        }
        attributes.update(
            {f"gen_ai.request.{key}": value for key, value in parameters.items() if value is not None}
        )
        tracer = self._provider.get_tracer("baton_serving")
        return tracer.start_span(f"{operation} {model}", kind=SpanKind.SERVER, attributes=attributes)

    def record_answer(
        self,
        span: Span,
        revision: str,
        usage: dict[str, int],
        finish_reasons: list[str],
        prompt: Any = None,
        completion: str | None = None,
    ) -> None:
        span.set_attribute("gen_ai.response.model", revision)
        span.set_attribute("baton.revision", revision)
        span.set_attribute("gen_ai.usage.input_tokens", usage.get("prompt_tokens", 0))
        span.set_attribute("gen_ai.usage.output_tokens", usage.get("completion_tokens", 0))
        span.set_attribute("gen_ai.response.finish_reasons", finish_reasons)
        if self.record_content:
            span.set_attribute("gen_ai.input.messages", json.dumps(prompt))
            span.set_attribute("gen_ai.output.messages", json.dumps(completion))

    @staticmethod
    def record_error(span: Span, error_type: str, message: str) -> None:
        span.set_attribute("error.type", error_type)
        span.set_status(Status(StatusCode.ERROR, message))
