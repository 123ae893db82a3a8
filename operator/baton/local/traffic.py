"""Synthetic client traffic for local mode: what an application would send while models are replaced.

The demo needs live traffic for the canary to judge, and a witness that no client request failed
while a promotion or rollback moved weights underneath. Every request is a real OpenAI-style call
to the local endpoint, with a session header (so stickiness is exercised) and, for extraction
prompts, a JSON-schema `response_format`. The generator is bounded in requests and in time, and
keeps counts only: prompts and completions are never logged.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

from baton_serving.wire import REVISION_HEADER

SESSION_HEADER = "X-Baton-Session"


@dataclass(frozen=True)
class Prompt:
    """One request body's content for a deployment."""

    deployment: str
    content: str
    json_schema: dict | None = None


@dataclass
class TrafficReport:
    """What the clients saw: answers per (deployment, revision) and every failure with its cause."""

    answered: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.answered.values()) + len(self.failures)

    def summary(self) -> str:
        by_revision = ", ".join(f"{rev}: {count}" for (_, rev), count in sorted(self.answered.items()))
        return f"{self.total} requests, {len(self.failures)} failed ({by_revision})"


def prompts_for(domains: Sequence[str], per_domain: int, seed: int = 4242) -> list[Prompt]:
    """Prompts from the model factory's synthetic documents (a seed of their own, not the benchmark's)."""
    from baton_models import domains as factory

    prompts = []
    for domain in domains:
        for case in factory.cases(domain, seed, per_domain):
            extraction = factory.example(case, "extraction")
            routing = factory.example(case, "routing")
            prompts.append(Prompt(domain, extraction.prompt, factory.json_schema(domain)))
            prompts.append(Prompt(domain, routing.prompt))
    random.Random(seed).shuffle(prompts)
    return prompts


def request_body(prompt: Prompt, max_tokens: int) -> dict:
    body: dict = {
        "model": prompt.deployment,
        "messages": [{"role": "user", "content": prompt.content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if prompt.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": f"{prompt.deployment}-extraction", "schema": prompt.json_schema},
        }
    return body


class TrafficGenerator:
    """A few client threads sending requests round-robin over the prompts until stopped or bounded."""

    def __init__(
        self,
        base_url: str,
        prompts: Sequence[Prompt],
        *,
        clients: int = 2,
        max_requests: int = 20_000,
        max_seconds: float = 1800.0,
        max_tokens: int = 48,
        sessions: int = 64,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = headers or {}
        self.report = TrafficReport()
        self._prompts = itertools.cycle(prompts)
        self._clients = clients
        self._max_requests = max_requests
        self._max_seconds = max_seconds
        self._max_tokens = max_tokens
        self._sessions = sessions
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sent = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> TrafficGenerator:
        deadline = time.monotonic() + self._max_seconds
        for index in range(self._clients):
            thread = threading.Thread(
                target=self._client, args=(index, deadline), name=f"traffic-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> TrafficReport:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.report

    def _next(self) -> Prompt | None:
        with self._lock:
            if self._sent >= self._max_requests:
                return None
            self._sent += 1
            return next(self._prompts)

    def _client(self, index: int, deadline: float) -> None:
        rng = random.Random(index)
        with httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=httpx.Timeout(120.0)
        ) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                prompt = self._next()
                if prompt is None:
                    return
                session = f"client-{index}-{rng.randrange(self._sessions)}"
                self._send(client, prompt, session)

    def _send(self, client: httpx.Client, prompt: Prompt, session: str) -> None:
        started = time.monotonic()
        try:
            response = client.post(
                "/v1/chat/completions",
                json=request_body(prompt, self._max_tokens),
                headers={SESSION_HEADER: session},
            )
        except httpx.HTTPError as error:
            self._record_failure(f"{prompt.deployment}: {type(error).__name__}: {error}")
            return
        elapsed = time.monotonic() - started
        if response.status_code != 200:
            self._record_failure(f"{prompt.deployment}: HTTP {response.status_code}: {response.text[:200]}")
            return
        revision = response.headers.get(REVISION_HEADER, "?")
        with self._lock:
            self.report.answered[(prompt.deployment, revision)] += 1
            self.report.latencies.append(elapsed)

    def _record_failure(self, cause: str) -> None:
        with self._lock:
            self.report.failures.append(cause)
