"""Benchmark runner: asks each revision the benchmark's items over the OpenAI-compatible endpoint.

Every request is pinned to one revision with the `X-Baton-Revision` header, and the answer only
counts if the response's `X-Baton-Revision` header names that same revision: a router that
ignored the pin would otherwise make the champion race against itself. Transport failures, HTTP
errors (a run of 100 % 404s) and malformed bodies are counted as errors, not scored as wrong
answers, so the sanity gate can call the evaluation itself broken (`Inconclusive`).

Answers are scored and dropped at once; prompts and completions are never logged or kept.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from baton.analysis.measurements import BenchmarkResult, BenchmarkRun, ItemResult
from baton.analysis.scorers import ScoreFunction, compile_scorer
from baton.api.benchmark import BenchmarkItem, ScorerType
from baton_serving.wire import REVISION_HEADER


class BenchmarkRunner:
    """Runs benchmarks against a baton (OpenAI-compatible) endpoint with bounded concurrency."""

    def __init__(
        self,
        base_url: str,
        *,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.console = console
        self.show_progress = show_progress

    def is_online(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/v1/models", timeout=self.timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, query: BenchmarkRun) -> BenchmarkResult:
        scorer = compile_scorer(query.spec.scorer)
        # Interleaved so that both revisions see the same server conditions over the run.
        jobs = [(item, revision) for item in query.items for revision in (query.champion, query.candidate)]
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(),
            console=self.console,
            disable=not self.show_progress,
        )
        limits = httpx.Limits(max_connections=self.concurrency)
        with progress, httpx.Client(base_url=self.base_url, timeout=self.timeout_s, limits=limits) as client:
            tasks = {
                revision: progress.add_task(
                    f"{query.benchmark} {role} {revision}", total=len(query.items), errors=0
                )
                for role, revision in (("champion", query.champion), ("candidate", query.candidate))
            }
            errors = Counter[str]()
            lock = threading.Lock()

            def run_one(job: tuple[BenchmarkItem, str]) -> ItemResult:
                item, revision = job
                result = _ask(client, query, scorer, item, revision)
                with lock:
                    errors[revision] += result.error is not None
                    progress.update(tasks[revision], advance=1, errors=errors[revision])
                return result

            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                results = tuple(pool.map(run_one, jobs))
        return BenchmarkResult(run=query, results=results)


def request_body(run: BenchmarkRun, item: BenchmarkItem) -> dict[str, Any]:
    """The chat completion request for one item (structured tasks send their JSON Schema)."""
    spec = run.spec
    messages: list[dict[str, str]] = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": item.prompt})
    body: dict[str, Any] = {
        "model": run.deployment,
        "messages": messages,
        "max_tokens": spec.max_tokens,
        "temperature": spec.temperature,
    }
    if spec.scorer.json_schema is not None and ScorerType(spec.scorer.type) in (
        ScorerType.JSON_SCHEMA,
        ScorerType.FIELD_MATCH,
    ):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": run.benchmark, "schema": spec.scorer.json_schema, "strict": True},
        }
    return body


def _ask(
    client: httpx.Client, run: BenchmarkRun, scorer: ScoreFunction, item: BenchmarkItem, revision: str
) -> ItemResult:
    started = time.monotonic()

    def failed(error: str) -> ItemResult:
        return ItemResult(item.id, revision, None, error, time.monotonic() - started)

    try:
        response = client.post(
            "/v1/chat/completions", json=request_body(run, item), headers={REVISION_HEADER: revision}
        )
    except httpx.HTTPError as error:
        return failed(f"transport: {type(error).__name__}")
    if response.status_code != 200:
        return failed(f"HTTP {response.status_code}")
    answered_by = response.headers.get(REVISION_HEADER)
    if answered_by != revision:
        return failed(f"answered by revision {answered_by!r}, not {revision!r}")
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return failed("malformed response body")
    if not isinstance(content, str):
        return failed("malformed response body")
    try:
        value = scorer(item.expected, content)
    except ValueError as error:
        return failed(f"scoring: {error}")
    return ItemResult(item.id, revision, value, None, time.monotonic() - started)
