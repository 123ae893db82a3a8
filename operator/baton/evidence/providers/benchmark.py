"""Benchmark runner: asks each revision the benchmark's items over the OpenAI-compatible endpoint.

Every request carries the operator's benchmark key (the one identity whose pin the ingress
honours) and is pinned to one revision with the `X-Baton-Revision` header, and the answer only
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

from baton.analysis.measurements import BenchmarkResult, BenchmarkRun, ItemResult
from baton.analysis.scorers import ScoreFunction, compile_scorer
from baton.api.benchmark import BenchmarkItem, ScorerType
from baton_serving.wire import REVISION_HEADER

# How often a run that takes a while says how far it is.
PROGRESS_EVERY_S = 15.0


class _Progress:
    """One line when a run starts, every PROGRESS_EVERY_S and when it ends.

    Plain lines read the same in a terminal, a piped log and CI, and several runs (one per
    deployment) may report at once, where a live display allows one.
    """

    def __init__(self, console: Console | None, run: BenchmarkRun) -> None:
        self.console = console
        self.run = run
        self.done = Counter[str]()
        self.errors = 0
        self.started = time.monotonic()
        self.last = self.started
        self._lock = threading.Lock()
        self._say("started")

    def advance(self, revision: str, failed: bool) -> None:
        with self._lock:
            self.done[revision] += 1
            self.errors += failed
            now = time.monotonic()
            if now - self.last >= PROGRESS_EVERY_S:
                self.last = now
                self._say(f"{now - self.started:.0f} s")

    def finish(self) -> None:
        self._say(f"done in {time.monotonic() - self.started:.0f} s")

    def _say(self, when: str) -> None:
        if self.console is None:
            return
        run, total = self.run, len(self.run.items)
        arms = ", ".join(
            f"{role} {revision} {self.done[revision]}/{total}"
            for role, revision in (("champion", run.champion), ("candidate", run.candidate))
        )
        self.console.log(
            f"benchmark {run.benchmark} ({run.deployment}): {arms}, errors {self.errors}, {when}"
        )


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
        api_key: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.console = console
        self.show_progress = show_progress
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def is_online(self) -> bool:
        try:
            response = httpx.get(f"{self.base_url}/v1/models", headers=self.headers, timeout=self.timeout_s)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, query: BenchmarkRun) -> BenchmarkResult:
        scorer = compile_scorer(query.spec.scorer)
        # Interleaved so that both revisions see the same server conditions over the run.
        jobs = [(item, revision) for item in query.items for revision in (query.champion, query.candidate)]
        progress = _Progress(self.console if self.show_progress else None, query)
        limits = httpx.Limits(max_connections=self.concurrency)
        with httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=self.timeout_s, limits=limits
        ) as client:

            def run_one(job: tuple[BenchmarkItem, str]) -> ItemResult:
                item, revision = job
                result = _ask(client, query, scorer, item, revision)
                progress.advance(revision, result.error is not None)
                return result

            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                results = tuple(pool.map(run_one, jobs))
        progress.finish()
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
    latency = time.monotonic() - started
    try:
        body = response.json()
        content = body["choices"][0]["message"]["content"]
        output_tokens = (body.get("usage") or {}).get("completion_tokens", 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return failed("malformed response body")
    if not isinstance(content, str) or not isinstance(output_tokens, int) or output_tokens < 0:
        return failed("malformed response body")
    try:
        value = scorer(item.expected, content)
    except ValueError as error:
        return failed(f"scoring: {error}")
    return ItemResult(item.id, revision, value, None, latency, output_tokens)
