"""The bake after a promotion, end to end: `baton up`'s runtime, real Ray Serve, real llama.cpp on the
factory's GGUF models, real client traffic; nothing stubbed and no hook in the code under test.

Two rollouts of one deployment whose only gate is the schema-validity guardrail on structured
answers, with `rollout.bakeTime`:

1. the trained v2 replaces the trained v1. While baking, v1 stays loaded, answers mirrored copies of
   every client request (never a client), and is removed once the bake passed.
2. v4 is an export that lost its end of sequence (the factory's untrained smoke weights): under a
   JSON-schema grammar it writes whatever the grammar allows until `max_tokens`. While it is
   canaried, clients ask for a yes/no flag (schema `boolean`): the grammar leaves nothing to ramble
   in, every answer is valid, and it is promoted. Then clients ask for the whole extraction (the
   domain's schema, string fields included): the trained v2 closes the object after 14-18 tokens,
   v4 runs to `max_tokens` inside a string every time, its answers no longer parse, and the bake,
   which compares them with v2's answers to the same (mirrored) requests, rolls back to v2 with no
   failed client request. The traffic changes, not the code: what a canary on other traffic cannot
   see. Validity, unlike latency, does not depend on how busy a shared 2-core machine is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
from jsonschema import ValidationError, validate

from baton.api.decision import Gate, Verdict
from baton.api.deployment import Phase
from baton.evidence.releases import candidate_for_file
from baton.evidence.samples import mirrored_answers, parse_exposition
from baton.local.runtime import LocalRuntime, RuntimeOptions
from baton.local.store import LocalStore
from baton.local.view import phase_text
from baton.rollout import parse_duration, parse_time
from baton_models.domains import benchmark_cases, example, json_schema
from tests.integration.local.test_local_runtime import resources
from tests.testbed.processes import free_ports

pytestmark = pytest.mark.e2e

BAKE_TIME = "10s"
MIN_SAMPLES = 20
DOMAIN = "construction"  # any domain of the factory
V1, V2, V4 = (f"{DOMAIN}-{version}" for version in ("v1", "v2", "v4"))
# What clients ask: (schema, max_tokens). A flag first, the whole extraction after the promotion.
FLAG = ({"type": "boolean"}, 8)
EXTRACTION = (json_schema(DOMAIN), 96)


def is_valid(text: str, schema: dict) -> bool:
    try:
        validate(json.loads(text), schema)
    except (json.JSONDecodeError, ValidationError):
        return False
    return True


class Clients:
    """One client calling the endpoint until stopped, greedy, asking what `asking` says.

    Records (answering revision, what was asked, completion tokens, valid) per answer, and failures.
    """

    def __init__(self, base_url: str, headers: dict[str, str], prompts: list[str]) -> None:
        self.base_url, self.headers, self.prompts = base_url, headers, prompts
        self.asking = FLAG
        self.answers: list[tuple[str, tuple, int, bool]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Clients:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def answered_by(self, since: int = 0) -> set[str]:
        return {answer[0] for answer in self.answers[since:]}

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60) as client:
            index = 0
            while not self._stop.is_set():
                asked = self.asking
                schema, max_tokens = asked
                body = {
                    "model": DOMAIN,
                    "messages": [{"role": "user", "content": self.prompts[index % len(self.prompts)]}],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "a", "schema": schema},
                    },
                }
                response = client.post("/v1/chat/completions", json=body)
                if response.status_code == 200:
                    answer = response.json()
                    text = answer["choices"][0]["message"]["content"]
                    revision = response.headers["X-Baton-Revision"]
                    tokens = answer["usage"]["completion_tokens"]
                    self.answers.append((revision, asked, tokens, is_valid(text, schema)))
                else:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                index += 1


def wait_for(runtime: LocalRuntime, predicate, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out; status: {runtime.deployments[DOMAIN].status}"
        time.sleep(0.1)


def events(store: LocalStore) -> list[tuple[str, str, str]]:
    lines = (store.state_dir / "events.jsonl").read_text().splitlines()
    return [(event["type"], event["reason"], event["message"]) for event in map(json.loads, lines)]


def mirrored(runtime: LocalRuntime, revision: str) -> float:
    counts = parse_exposition(runtime.serve.ingress.metrics_text()).get(DOMAIN)
    return counts.requests.get(mirrored_answers(revision), 0.0) if counts else 0.0


@pytest.mark.timeout(900)
def test_the_bake_keeps_the_previous_champion_and_rolls_back_a_regression(tmp_path, model_artifact):
    from baton_models import catalog

    v1 = model_artifact(DOMAIN, "v1", "Q8_0", score=False)
    v2 = model_artifact(DOMAIN, "v2", "Q8_0", score=False)
    runaway = catalog.smoke(DOMAIN, "Q8_0")
    prompts = [example(case, "extraction").prompt for case in benchmark_cases(DOMAIN, 8)]
    resources(
        tmp_path / "resources",
        v1,
        DOMAIN,
        engine={"contextLength": 512},
        rollout={
            "steps": [{"weight": 50, "pause": "3s", "minRequests": MIN_SAMPLES}],
            "bakeTime": BAKE_TIME,
            "progressDeadline": "90s",
        },
        analysis={"minSamples": MIN_SAMPLES, "metrics": [{"name": "schema", "kind": "validity"}]},
    )
    store = LocalStore(tmp_path / "state")
    (port,) = free_ports(1)
    options = RuntimeOptions(paths=[tmp_path / "resources"], port=port, show_benchmark_progress=False)
    runtime = LocalRuntime.prepare(options, store)
    runtime.start()
    status = lambda: runtime.deployments[DOMAIN].status  # noqa: E731
    bake_seconds = parse_duration(BAKE_TIME)
    try:
        wait_for(runtime, lambda: status().phase == Phase.SERVING)
        with Clients(runtime.serve.base_url, runtime.serve.keys.client_headers, prompts) as clients:
            # 1. A clean bake: v1 stays loaded and mirrored for the bake time, then it is removed.
            store.add_candidate(candidate_for_file(DOMAIN, v2.path, version="v2"))
            wait_for(runtime, lambda: status().phase == Phase.BAKING)
            baking = status()
            assert (baking.champion.version, baking.previous.version) == ("v2", "v1")
            assert runtime.serve.revision_health()[DOMAIN][V1].state == "Ready"
            assert phase_text(runtime.deployments[DOMAIN]).startswith("Baking (v1 mirrored, ")
            (progressing,) = [c for c in baking.conditions if c.type == "Progressing"]
            assert (
                progressing.message == f"v2: baking for {BAKE_TIME}, v1 loaded and mirrored to roll back to"
            )
            before = mirrored(runtime, V1)
            wait_for(runtime, lambda: mirrored(runtime, V1) > before + MIN_SAMPLES, timeout=30)
            seen = len(clients.answers)
            wait_for(runtime, lambda: len(clients.answers) > seen + MIN_SAMPLES, timeout=30)
            assert clients.answered_by(seen) == {V2}, "the previous champion answers no client"
            wait_for(runtime, lambda: status().phase == Phase.PROMOTED)
            promoted = status()
            bake = promoted.record[-1]
            assert (bake.verdict, bake.reason) == (Verdict.PROMOTE, "BakePassed"), bake
            assert (parse_time(bake.time) - parse_time(baking.phase_since)).total_seconds() >= bake_seconds
            (validity,) = bake.evidence
            assert min(validity.n_champion, validity.n_candidate) >= MIN_SAMPLES, validity
            assert (promoted.champion.version, promoted.previous) == ("v2", None)
            # The candidate's status is written after the deployment's, in the same pass.
            wait_for(runtime, lambda: runtime.candidates[V2].status.phase == Phase.PROMOTED, timeout=10)
            assert runtime.candidates[V2].status.record[-1] == bake
            wait_for(runtime, lambda: V1 not in runtime.serve.revision_health()[DOMAIN], 60)
            reasons = [reason for _, reason, _ in events(store)]
            assert reasons.index("Baking") < reasons.index("BakePassed")

            # 2. A regression after the promotion: the bake rolls back to v2.
            store.add_candidate(candidate_for_file(DOMAIN, runaway.path, version="v4"))
            wait_for(runtime, lambda: status().phase == Phase.BAKING and status().champion.version == "v4")
            assert status().previous.version == "v2"
            assert runtime.serve.revision_health()[DOMAIN][V2].state == "Ready"
            clients.asking = EXTRACTION  # the traffic changes: whole extractions from now on
            wait_for(runtime, lambda: status().phase == Phase.ROLLED_BACK, timeout=120)
            rolled_back = status()
            # Local mode sees no served weights: the ingress applies the table moments later.
            wait_for(runtime, lambda: clients.answers[-1][0] == V2, timeout=30)
            seen = len(clients.answers)
            wait_for(runtime, lambda: len(clients.answers) > seen + MIN_SAMPLES, timeout=30)
            assert clients.answered_by(seen) == {V2}, "the previous champion serves again"
        assert clients.failures == []
    finally:
        runtime.stop()

    decision = rolled_back.last_decision
    assert (decision.verdict, decision.gate, decision.candidate) == (Verdict.REJECT, Gate.ONLINE, "v4")
    assert decision.reason == "CanaryWorse", decision
    assert decision.message.startswith("bake against v2: schema: candidate shown worse"), decision.message
    (evidence,) = decision.evidence
    assert evidence.effect < 0 and evidence.n_champion >= MIN_SAMPLES, evidence
    assert (
        parse_time(decision.time) - parse_time(rolled_back.record[-2].time)
    ).total_seconds() < bake_seconds
    assert rolled_back.champion.version == "v2" and rolled_back.previous is None
    assert [(d.candidate, d.verdict) for d in rolled_back.history[:2]] == [
        ("v4", Verdict.REJECT),
        ("v4", Verdict.PROMOTE),
    ]
    v4 = runtime.candidates[V4].status
    assert (v4.phase, v4.decision) == (Phase.ROLLED_BACK, decision)
    assert [d.reason for d in v4.record][-2:] == ["AllGatesPassed", decision.reason]
    warnings = [(reason, message) for kind, reason, message in events(store) if kind == "Warning"]
    reasons = [reason for reason, _ in warnings]
    assert reasons.index("RollingBack") < reasons.index("RolledBack"), warnings
    assert dict(warnings)["RolledBack"].endswith("; v2 serves again"), warnings
    assert (decision.reason, f"ModelCandidate {V4}: {decision.message}") in warnings, warnings

    # The premise, measured: every flag is valid from every revision; asked for the whole extraction,
    # v4 runs to max_tokens and never answers valid JSON, v2 always does, well before max_tokens.
    flags = {(revision, valid) for revision, asked, _, valid in clients.answers if asked == FLAG}
    assert {valid for _, valid in flags} == {True} and {V2, V4} <= {r for r, _ in flags}, flags
    whole = [(r, tokens, valid) for r, asked, tokens, valid in clients.answers if asked == EXTRACTION]
    assert {(tokens, valid) for r, tokens, valid in whole if r == V4} == {(EXTRACTION[1], False)}, whole
    assert all(valid and tokens < EXTRACTION[1] // 2 for r, tokens, valid in whole if r == V2), whole

    shown = subprocess.run(
        [sys.executable, "-m", "baton.cli", "status", "--state-dir", str(store.state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"COLUMNS": "250"},
        check=True,
    ).stdout
    row = next(line for line in shown.splitlines() if line.startswith(f"{DOMAIN} "))
    assert row.split()[2:5] == ["v2", "-", "RolledBack"], shown
    assert any(line.startswith(V4) and "RolledBack" in line for line in shown.splitlines()), shown
