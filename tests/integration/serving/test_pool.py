"""A real local Ray Serve pool serving the model factory's GGUFs through the OpenAI API.

Covers the data plane's promises end to end: the official `openai` client works (chat, streaming,
completions, models, JSON-schema output); the weighted split and stickiness hold; weights change
under load without a failed request or an engine restart; a wrong or corrupt candidate never
serves; malformed requests get OpenAI-shaped 4xx errors; real Prometheus sees per-revision rates.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from baton_serving.app import apply_serve_config
from baton_serving.config import PoolConfig, engine_app_name, render_serve_config
from tests.plugins_serving import AUTH, BENCHMARK_KEY

pytestmark = pytest.mark.integration

CONTEXT = 256
SPLIT_REQUESTS = 1_000


class Triage(BaseModel):
    urgency: Literal["low", "medium", "high"]
    age: int
    regression: bool


@pytest.fixture(scope="module")
def artifacts(model_artifact) -> dict[str, tuple[str, str, int]]:
    """Two different files of the factory's smoke model: (path, digest, size) per revision."""
    champion, candidate = (
        model_artifact("medical", "smoke", "Q8_0"),
        model_artifact("medical", "smoke", "Q4_K_M"),
    )
    return {
        "champion": (str(champion.path), champion.digest, champion.size_bytes),
        "candidate": (str(candidate.path), candidate.digest, candidate.size_bytes),
    }


def pool_config(
    revisions: dict[str, tuple[str, str, int]], weights: dict, shadow=None, tracing=None
) -> PoolConfig:
    return PoolConfig.model_validate(
        {
            "pool": "test-pool",
            "tracing": tracing or {},
            # Two ingress processes: metrics must be aggregated across them (tested below).
            "ingress_replicas": 2,
            "deployments": [
                {
                    "name": "medical",
                    "revisions": [
                        {
                            "name": name,
                            "artifact": {"uri": path, "digest": digest, "size_bytes": size},
                            "context_length": CONTEXT,
                            "resources": {"num_cpus": 0.05},
                        }
                        for name, (path, digest, size) in revisions.items()
                    ],
                    "route": {"weights": weights, "shadow": shadow},
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("spans") / "spans.jsonl"


@pytest.fixture(scope="module")
def pool(local_serve, artifacts, spans_file):
    """The standard pool: champion 80 %, candidate 20 %, tracing into a file."""
    tracing = {"enabled": True, "jsonl_path": str(spans_file)}

    def deploy(weights=None, shadow=None, revisions=None):
        config = pool_config(
            revisions or artifacts, weights or {"champion": 80, "candidate": 20}, shadow, tracing
        )
        return local_serve.deploy(config)

    deploy()
    return deploy


@pytest.fixture
def client(local_serve) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local_serve.url}/v1", api_key=BENCHMARK_KEY, max_retries=0, timeout=60)


def complete(url: str, headers: dict | None = None, max_tokens: int = 1) -> httpx.Response:
    body = {"model": "medical", "prompt": "The patient", "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{url}/v1/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=60)


def ingress_replicas(url: str, expected: int = 2) -> set[str]:
    """The ingress replicas that answer /healthz, asked until all `expected` answered (at most 300 calls).

    Serve's router may send many calls in a row to one replica: a fixed small sample can miss one.
    """
    seen: set[str] = set()
    for _ in range(300):
        seen.add(httpx.get(f"{url}/healthz", timeout=30).json()["replica"])
        if len(seen) >= expected:
            break
    return seen


def baton_requests_total(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("baton_requests_total{") and 'pool="test-pool"' in line
    )


def test_openai_client_chat_streaming_completions_and_models(pool, client):
    raw = client.chat.completions.with_raw_response.create(
        model="medical", messages=[{"role": "user", "content": "Chest pain since morning."}], max_tokens=8
    )
    assert raw.headers["x-baton-revision"] in {"champion", "candidate"}
    chat = raw.parse()
    assert chat.model == "medical"
    assert chat.usage.completion_tokens >= 1
    assert isinstance(chat.choices[0].message.content, str)

    chunks = list(
        client.chat.completions.create(
            model="medical",
            messages=[{"role": "user", "content": "Fever."}],
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1

    completion = client.completions.create(model="medical", prompt="The patient", max_tokens=4)
    assert completion.choices[0].text is not None and completion.usage.completion_tokens >= 1

    assert [model.id for model in client.models.list()] == ["medical"]


def test_json_schema_response_parses_into_the_pydantic_model(pool, client, local_serve):
    parsed = client.chat.completions.parse(
        model="medical",
        messages=[{"role": "user", "content": "62 year old, crushing chest pain."}],
        response_format=Triage,
        max_tokens=200,
        temperature=0,
    )
    assert isinstance(parsed.choices[0].message.parsed, Triage)
    exposition = httpx.get(f"{local_serve.url}/metrics", timeout=30).text
    assert any(
        line.startswith("baton_structured_outputs_total{")
        and 'valid="true"' in line
        and not line.endswith(" 0.0")
        for line in exposition.splitlines()
    )


def test_split_follows_weights_and_sessions_stick(pool, local_serve):
    with ThreadPoolExecutor(4) as workers:
        answers = list(workers.map(lambda _: complete(local_serve.url), range(SPLIT_REQUESTS)))
    assert all(answer.status_code == 200 for answer in answers)
    counts = Counter(answer.headers["x-baton-revision"] for answer in answers)
    tolerance = 4 * math.sqrt(SPLIT_REQUESTS * 0.2 * 0.8)  # 4 standard deviations of the binomial
    assert abs(counts["candidate"] - 0.2 * SPLIT_REQUESTS) <= tolerance, counts

    sessions = {}
    for index in range(40):
        key = f"session-{index}"
        seen = {
            complete(local_serve.url, {"X-Baton-Session": key}).headers["x-baton-revision"] for _ in range(5)
        }
        assert len(seen) == 1, (key, seen)
        sessions[key] = seen.pop()
    assert set(sessions.values()) == {"champion", "candidate"}


def test_weights_change_under_load_without_failures_or_restarts(pool, local_serve):
    before = {name: local_serve.engine_status("medical", name) for name in ("champion", "candidate")}
    ingress_before = ingress_replicas(local_serve.url)
    stop = threading.Event()
    failures: list[str] = []
    answered: list[tuple[float, str]] = []

    def client_loop() -> None:
        deadline = time.monotonic() + 180
        for _ in range(5_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                response = complete(local_serve.url)
            except httpx.HTTPError as error:
                failures.append(repr(error))
                continue
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
            else:
                answered.append((time.monotonic(), response.headers["x-baton-revision"]))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for candidate in (0, 10, 50, 100):
            pool(weights={"champion": 100 - candidate, "candidate": candidate})
            time.sleep(3)
        settled = time.monotonic()
        time.sleep(2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    after = {name: local_serve.engine_status("medical", name) for name in ("champion", "candidate")}
    assert ingress_replicas(local_serve.url) == ingress_before

    assert failures == []
    assert len(answered) > 100
    assert {revision for at, revision in answered if at > settled + 1} == {"candidate"}
    for name in before:
        assert (after[name]["pid"], after[name]["replica_id"]) == (
            before[name]["pid"],
            before[name]["replica_id"],
        )
    pool()  # back to the standard split for the tests that follow


def test_routing_table_may_name_an_engine_serve_has_not_built_yet(pool, local_serve, artifacts, spans_file):
    """Serve builds applications asynchronously: the ingress may learn of a revision first.

    Its `reconfigure` must not fail then (Serve would replace the ingress replica, dropping requests);
    the revision stays unready until its engine answers, and the others serve throughout.
    """
    ingress_before = ingress_replicas(local_serve.url)
    revisions = {**artifacts, "late": artifacts["champion"]}
    weights = {"champion": 80, "candidate": 20, "late": 0}
    tracing = {"enabled": True, "jsonl_path": str(spans_file)}  # as the pool's: a change restarts the ingress
    config = render_serve_config(
        pool_config(revisions, weights, tracing=tracing).model_copy(
            update={"auth": local_serve.auth, "fetch": local_serve.fetch}
        )
    )
    late_app = engine_app_name("medical", "late")
    config["applications"] = [app for app in config["applications"] if app["name"] != late_app]
    apply_serve_config(config)

    deadline = time.monotonic() + 60
    while "late" not in httpx.get(f"{local_serve.url}/v1/baton/revisions", timeout=30).json()["medical"]:
        assert time.monotonic() < deadline, "the ingress never applied the routing table"
        time.sleep(0.5)
    time.sleep(3)  # several probe rounds against the missing application
    assert [complete(local_serve.url).status_code for _ in range(20)] == [200] * 20
    late = httpx.get(f"{local_serve.url}/v1/baton/revisions", timeout=30).json()["medical"]["late"]
    assert late["ready"] is False and late["error"] is None

    status = local_serve.deploy(pool_config(revisions, weights, tracing=tracing))
    assert status["medical"]["late"]["ready"] is True
    assert ingress_replicas(local_serve.url) == ingress_before
    pool()


def test_a_wrong_or_corrupt_candidate_never_serves(pool, local_serve, artifacts, tmp_path):
    champion_path, champion_digest, size = artifacts["champion"]
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(Path(champion_path).read_bytes()[: size // 2])
    truncated_digest = "sha256:" + hashlib.sha256(truncated.read_bytes()).hexdigest()
    wrong_digest = "sha256:" + "0" * 64
    revisions = {
        "champion": artifacts["champion"],
        "wrongdigest": (champion_path, wrong_digest, size),
        "truncated": (str(truncated), truncated_digest, size // 2),
    }
    status = pool(weights={"champion": 50, "wrongdigest": 25, "truncated": 25}, revisions=revisions)
    try:
        refused = status["medical"]["wrongdigest"]
        assert not refused["ready"]
        assert champion_path in refused["error"] and wrong_digest in refused["error"]
        assert champion_digest not in refused["error"]  # nothing of what was read
        assert "truncated GGUF" in status["medical"]["truncated"]["error"]

        answers = [complete(local_serve.url) for _ in range(40)]
        assert {(a.status_code, a.headers["x-baton-revision"]) for a in answers} == {(200, "champion")}

        pinned = complete(local_serve.url, {"X-Baton-Revision": "wrongdigest"})
        assert pinned.status_code == 503
        assert "digest mismatch" in pinned.json()["error"]["message"]

        # The digest corrected under the same revision name: Serve replaces that engine and the
        # ingress notices on its own.
        pool(
            weights={"champion": 50, "wrongdigest": 50},
            revisions={**revisions, "wrongdigest": artifacts["champion"]},
        )
        deadline = time.monotonic() + 120
        while complete(local_serve.url, {"X-Baton-Revision": "wrongdigest"}).status_code != 200:
            assert time.monotonic() < deadline, "the corrected revision never became ready"
            time.sleep(1)
    finally:
        pool()


@pytest.mark.parametrize(
    ("body", "headers", "status", "param"),
    [
        (b"{not json", {}, 400, None),
        (json.dumps({"model": "nope", "prompt": "x"}).encode(), {}, 404, "model"),
        (
            json.dumps({"model": "medical", "prompt": "x", "max_tokens": 10**6}).encode(),
            {},
            400,
            "max_tokens",
        ),
        (json.dumps({"model": "medical", "prompt": 5}).encode(), {}, 400, "prompt"),
        (
            json.dumps({"model": "medical", "prompt": "x"}).encode(),
            {"X-Baton-Revision": "v99"},
            400,
            "X-Baton-Revision",
        ),
    ],
)
def test_malformed_completions_get_openai_errors(pool, local_serve, body, headers, status, param):
    response = httpx.post(
        f"{local_serve.url}/v1/completions",
        content=body,
        headers={"content-type": "application/json", **AUTH, **headers},
        timeout=60,
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert httpx.get(f"{local_serve.url}/healthz", timeout=30).status_code == 200


def test_a_bad_json_schema_is_a_400_and_the_server_stays_healthy(pool, local_serve):
    body = {
        "model": "medical",
        "messages": [{"role": "user", "content": "x"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "t", "schema": {"type": "nonsense"}},
        },
    }
    response = httpx.post(f"{local_serve.url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "response_format.json_schema.schema"
    assert complete(local_serve.url).status_code == 200


def test_shadow_answers_are_scored_never_returned(pool, local_serve):
    pool(weights={"champion": 100, "candidate": 0}, shadow="candidate")
    try:
        answers = [complete(local_serve.url, max_tokens=4) for _ in range(20)]
        assert {a.headers["x-baton-revision"] for a in answers} == {"champion"}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = httpx.get(f"{local_serve.url}/metrics", timeout=30).text
            compared = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("baton_shadow_comparisons_total{") and 'revision="candidate"' in line
            )
            if compared >= 20:
                break
            time.sleep(0.5)
        assert compared >= 20
    finally:
        pool()


def test_spans_carry_genai_attributes_without_content(pool, local_serve, spans_file):
    complete(local_serve.url, max_tokens=3)
    records = [json.loads(line) for line in spans_file.read_text().splitlines()]
    attributes = records[-1]["attributes"]
    assert attributes["gen_ai.request.model"] == "medical"
    assert attributes["gen_ai.response.model"] in {"champion", "candidate"}
    assert attributes["gen_ai.usage.output_tokens"] >= 1
    assert not any("The patient" in json.dumps(record) for record in records)


def test_prometheus_scrapes_per_revision_rates(pool, local_serve, prometheus):
    exposition = httpx.get(f"{local_serve.url}/metrics", timeout=30).text
    check = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check

    server = prometheus(targets=[local_serve.url.removeprefix("http://")])
    query = 'sum by (revision) (rate(baton_requests_total{deployment="medical",code="200"}[15s]))'
    deadline = time.monotonic() + 90
    rates: dict[str, float] = {}
    while time.monotonic() < deadline and set(rates) != {"champion", "candidate"}:
        for _ in range(20):
            complete(local_serve.url)
        result = httpx.get(f"{server.url}/api/v1/query", params={"query": query}, timeout=30).json()
        rates = {item["metric"]["revision"]: float(item["value"][1]) for item in result["data"]["result"]}
        rates = {revision: rate for revision, rate in rates.items() if rate > 0}
    assert set(rates) == {"champion", "candidate"}, rates


def histogram_count(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{name}_count{{") and 'pool="test-pool"' in line
    )


def histogram_sum(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(f"{name}_sum{{") and 'pool="test-pool"' in line
    )


TOKEN_TIMINGS = ("baton_time_to_first_token_seconds", "baton_time_per_output_token_seconds")


def token_timings_grown(url: str, before: str, answers: int, several: int) -> list[float]:
    """How many TTFT and TPOT observations were added since `before` (scraped until they show)."""
    deadline = time.monotonic() + 30
    while True:
        after = httpx.get(f"{url}/metrics", timeout=30).text
        grown = [histogram_count(after, name) - histogram_count(before, name) for name in TOKEN_TIMINGS]
        if (grown[0] >= answers and grown[1] >= several) or time.monotonic() > deadline:
            return grown
        time.sleep(0.5)


def test_a_non_streamed_ollama_answer_records_its_time_to_first_token_and_per_token(pool, local_serve):
    """Ollama's non-streamed answers are decoded as a stream at the ingress: their first token has a
    time, so they count in TTFT and TPOT like streamed ones."""
    before = httpx.get(f"{local_serve.url}/metrics", timeout=30).text
    body = {"model": "medical", "prompt": "The patient", "stream": False, "options": {"num_predict": 4}}
    answers = [
        httpx.post(f"{local_serve.url}/api/generate", json=body, headers=AUTH, timeout=60) for _ in range(5)
    ]
    assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
    several = sum(answer.json()["eval_count"] > 1 for answer in answers)
    grown = token_timings_grown(local_serve.url, before, 5, several)
    assert grown[0] >= 5, grown
    assert grown[1] >= several, (grown, several)


def test_a_non_streamed_openai_answer_records_its_time_to_first_token_and_per_token(pool, local_serve):
    """An OpenAI answer sent whole (one engine call, no stream) still has a time to first token: its
    latency at the ingress less llama.cpp's own decoding time after the first token. It is part of
    the request's duration, and llama-server's timings never leak into the client's answer."""
    names = (*TOKEN_TIMINGS, "baton_request_duration_seconds")
    before = httpx.get(f"{local_serve.url}/metrics", timeout=30).text
    answers = [complete(local_serve.url, max_tokens=6) for _ in range(3)]
    chat = {"model": "medical", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 6}
    answers += [
        httpx.post(f"{local_serve.url}/v1/chat/completions", json=chat, headers=AUTH, timeout=60)
        for _ in range(3)
    ]
    assert all(answer.status_code == 200 for answer in answers), [answer.text for answer in answers]
    assert not any({"timings", "baton_decode_after_first_token_s"} & set(answer.json()) for answer in answers)
    several = sum(answer.json()["usage"]["completion_tokens"] > 1 for answer in answers)
    assert several >= 1, [answer.json()["usage"] for answer in answers]
    grown = token_timings_grown(local_serve.url, before, len(answers), several)
    assert grown[0] >= len(answers), grown
    assert grown[1] >= several, (grown, several)
    after = httpx.get(f"{local_serve.url}/metrics", timeout=30).text
    ttft, tpot, duration = (histogram_sum(after, name) - histogram_sum(before, name) for name in names)
    assert 0 < ttft < duration, (ttft, duration)
    assert 0 < tpot < duration, (tpot, duration)


def test_metrics_of_every_ingress_replica_are_exposed(pool, local_serve):
    """Whichever ingress process answers the scrape, it reports the requests both of them answered."""
    assert len(ingress_replicas(local_serve.url)) == 2
    before = baton_requests_total(httpx.get(f"{local_serve.url}/metrics", timeout=30).text)
    assert all(complete(local_serve.url).status_code == 200 for _ in range(60))
    for _ in range(10):
        after = baton_requests_total(httpx.get(f"{local_serve.url}/metrics", timeout=30).text)
        assert after - before == 60


def test_a_scrape_addressed_to_this_node_or_by_a_name_gets_every_series(pool, local_serve):
    """Only a scrape addressed to another Ray node's IP is answered with no series (a pool of two
    nodes: tests/e2e/test_prometheus_node.py); this node's own IP, loopback, a Service's name and an
    address that is no Ray node's (a ClusterIP, looked up in the GCS) get the whole exposition."""
    import ray

    assert complete(local_serve.url).status_code == 200
    hosts = [f"{ray.util.get_node_ip_address()}:8000", "127.0.0.1", "cpu-small-serve-svc.ns.svc:8000"]
    for host in [*hosts, "10.96.0.10:8000"]:
        text = httpx.get(f"{local_serve.url}/metrics", headers={"Host": host}, timeout=30).text
        assert baton_requests_total(text) > 0, host
