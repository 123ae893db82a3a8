"""Hostile requests against the real ingress: generated bodies never get a 500 and never stop the server.

A property-based fuzzer (hypothesis) sends a bounded number of requests, in a bounded time, to a
real local Ray Serve pool with two llama.cpp revisions of the factory's smoke model: well-formed
requests with fields swapped for wrong types, arbitrary JSON, raw bytes, JSON nested thousands
deep, strings past the body limit, unicode (lone surrogates included), content-part arrays and
response schemas built from JSON-Schema keywords (deep, huge, self-referring, catastrophic
repetition). Every answer must be a 2xx or an OpenAI-shaped 4xx; a 5xx, a timeout or an error
event inside a stream fails the test. Afterwards the server is alive and a well-formed request is
served. The counts by status are printed (`-s`) and recorded in docs/serving.md.

Also here: a client's 4xx routed to the candidate is not counted against it by the canary.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from baton.evidence.samples import Counts, parse_exposition
from baton_serving.config import PoolConfig, RequestLimits
from tests.plugins_serving import AUTH

pytestmark = pytest.mark.integration

CONTEXT = 256
FUZZ_EXAMPLES = 3_000
FUZZ_BUDGET_S = 420.0
LIMITS = RequestLimits()


@pytest.fixture(scope="module")
def fuzz_pool(local_serve, model_artifact) -> str:
    revisions = []
    for name, quantization in (("champion", "Q8_0"), ("candidate", "Q4_K_M")):
        artifact = model_artifact("medical", "smoke", quantization)
        revisions.append(
            {
                "name": name,
                "artifact": {
                    "uri": str(artifact.path),
                    "digest": artifact.digest,
                    "size_bytes": artifact.size_bytes,
                },
                "context_length": CONTEXT,
                "resources": {"num_cpus": 0.05},
            }
        )
    config = PoolConfig.model_validate(
        {
            "pool": "fuzz-pool",
            "deployments": [
                {
                    "name": "medical",
                    "revisions": revisions,
                    "route": {"weights": {"champion": 50, "candidate": 50}},
                }
            ],
        }
    )
    status = local_serve.deploy(config)
    assert all(state["ready"] for state in status["medical"].values()), status
    return local_serve.url


# --- strategies ------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# Text from every Unicode category but surrogates (JSON-escaped lone surrogates come as raw bodies).
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
huge = st.sampled_from([LIMITS.max_body_bytes // 2, LIMITS.max_body_bytes + 1, 3 * LIMITS.max_body_bytes])

content_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts})
    | st.fixed_dictionaries(
        {"type": st.sampled_from(["image_url", "input_audio", "text", ""]), "text": any_json}
    )
    | any_json,
    max_size=4,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant", "developer", "tool"]) | any_json},
        optional={
            "content": texts | content_parts | any_json,
            "name": texts | any_json,
            "tool_calls": any_json,
        },
    ),
    max_size=6,
)

keyword_values = st.deferred(lambda: schemas) | any_json | st.integers(-5, 100_000)


def _schema_dict(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array", "string", "integer", "number", "boolean", "null"])
            | st.lists(st.sampled_from(["string", "null"]), max_size=2)
            | any_json,
            "properties": st.dictionaries(texts, children, max_size=4),
            "required": st.lists(texts, max_size=3) | any_json,
            "items": children,
            "enum": st.lists(json_scalars, max_size=5),
            "const": json_scalars,
            "anyOf": st.lists(children, max_size=3),
            "oneOf": st.lists(children, max_size=3),
            "allOf": st.lists(children, max_size=3),
            "$ref": st.sampled_from(
                ["#", "#/properties/a", "#/$defs/x", "https://example.com/s.json", "file:///etc/passwd"]
            ),
            "$defs": st.dictionaries(st.sampled_from(["x", "y"]), children, max_size=2),
            "pattern": st.sampled_from(["^(a+)+$", "(a{999}){999}", "[", "\\d{1,3}", "(x|y)*z"]) | texts,
            "minLength": st.integers(-1, 100_000),
            "maxLength": st.integers(-1, 100_000),
            "minItems": st.integers(-1, 100_000),
            "maxItems": st.integers(-1, 100_000),
            "minimum": st.integers() | st.floats(allow_nan=False),
            "additionalProperties": st.booleans() | children,
            "format": st.sampled_from(["date", "date-time", "uuid", "email", "nonsense"]),
        },
    )


schemas = st.recursive(st.booleans() | _schema_dict(st.booleans()), _schema_dict, max_leaves=12)


def _deep_schema(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


response_formats = (
    st.fixed_dictionaries(
        {
            "type": st.just("json_schema"),
            "json_schema": st.fixed_dictionaries(
                {"name": texts, "schema": schemas | st.integers(1, 300).map(_deep_schema)},
                optional={"strict": st.booleans()},
            ),
        }
    )
    | st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object", "json_schema", "xml"])})
    | any_json
)
sampling = {
    "max_tokens": st.integers(1, 8) | st.integers(-5, 10**6) | any_json,
    "temperature": st.floats(0, 2) | any_json,
    "top_p": st.floats(0.01, 1) | any_json,
    "n": st.integers(0, 3),
    "stop": texts | st.lists(texts, max_size=8) | any_json,
    "seed": st.integers() | any_json,
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}) | any_json,
    "user": texts,
    "presence_penalty": st.floats(-3, 3),
    "logit_bias": any_json,
}


@st.composite
def requests(draw) -> tuple[str, str, bytes]:
    """(kind of input, endpoint, body): one generated request, valid or hostile."""
    kind = draw(
        st.sampled_from(["chat", "chat", "chat", "completion", "json", "bytes", "deep", "huge", "surrogate"])
    )
    endpoint = draw(st.sampled_from(["chat/completions", "completions"]))
    if kind == "chat":
        endpoint = "chat/completions"
        body = draw(
            st.fixed_dictionaries(
                {"model": st.just("medical") | texts, "messages": messages},
                optional={
                    **sampling,
                    "response_format": response_formats,
                    "max_completion_tokens": st.integers(-1, 8),
                },
            )
        )
        body.setdefault("max_tokens", 4)  # keep generation short: the budget is for many requests
        return kind, endpoint, json.dumps(body).encode()
    if kind == "completion":
        endpoint = "completions"
        body = draw(
            st.fixed_dictionaries(
                {"model": st.just("medical"), "prompt": texts | any_json}, optional=sampling
            )
        )
        body.setdefault("max_tokens", 4)
        return kind, endpoint, json.dumps(body).encode()
    if kind == "json":
        return kind, endpoint, json.dumps(draw(any_json)).encode()
    if kind == "bytes":
        return kind, endpoint, draw(st.binary(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(50, 100_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        inner = opener * depth + "1" + closer * depth
        return kind, endpoint, ('{"model": "medical", "messages": ' + inner + "}").encode()
    if kind == "huge":
        size = draw(huge)
        body = {"model": "medical", "messages": [{"role": "user", "content": "x" * size}], "max_tokens": 1}
        return kind, "chat/completions", json.dumps(body).encode()
    escape = draw(st.sampled_from(["\\ud800", "\\udfff", "\\u0000", "\\uffff", "\\ud83d\\ude00"]))
    return kind, endpoint, ('{"model": "medical", "prompt": "a' + escape + 'b", "max_tokens": 2}').encode()


# --- the fuzz test ---------------------------------------------------------------------------


def _server_failure(response: httpx.Response) -> str | None:
    """Why an answer is a server-side failure, or None: 5xx, a non-OpenAI 4xx, an error in a stream."""
    if response.status_code >= 500:
        return f"status {response.status_code}: {response.text[:200]}"
    if 400 <= response.status_code < 500:
        error = response.json().get("error", {})
        if not (error.get("message") and error.get("type") and "param" in error and "code" in error):
            return f"status {response.status_code} not in OpenAI's shape: {response.text[:200]}"
    if (
        response.headers.get("content-type", "").startswith("text/event-stream")
        and '"error"' in response.text
    ):
        return f"an error event in a stream: {response.text[-300:]}"
    return None


def test_generated_hostile_requests_never_get_a_500(fuzz_pool):
    url = fuzz_pool
    outcomes: Counter[tuple[str, str]] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    client = httpx.Client(base_url=f"{url}/v1", headers=AUTH, timeout=120)

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # every example is sent once; failures are collected, not shrunk
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def send(request: tuple[str, str, bytes]) -> None:
        if time.monotonic() - started > FUZZ_BUDGET_S:
            return
        kind, endpoint, body = request
        try:
            response = client.post(endpoint, content=body, headers={"content-type": "application/json"})
        except httpx.TimeoutException:
            outcomes[(kind, "timeout")] += 1
            failures.append(f"{kind}: timed out: {body[:200]!r}")
            return
        outcomes[(kind, str(response.status_code))] += 1
        why = _server_failure(response)
        if why:
            failures.append(f"{kind} {endpoint}: {why}; body {body[:300]!r}")

    try:
        send()
    finally:
        client.close()
    elapsed = time.monotonic() - started
    by_status = Counter()
    for (_, status), count in outcomes.items():
        by_status[status] += count
    total = sum(outcomes.values())
    print(f"\nfuzz: {total} requests in {elapsed:.0f} s; by status: {dict(sorted(by_status.items()))}")
    for kind in sorted({kind for kind, _ in outcomes}):
        print(f"  {kind}: {dict(sorted((s, c) for (k, s), c in outcomes.items() if k == kind))}")
    assert total >= 1_000, "the fuzzer must send at least a thousand requests"
    assert not failures, f"{len(failures)} server-side failures, e.g.:\n" + "\n".join(failures[:10])
    # Still alive, still serving, both revisions.
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
    for revision in ("champion", "candidate"):
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "medical", "messages": [{"role": "user", "content": "Fever."}], "max_tokens": 4},
            headers={**AUTH, "X-Baton-Revision": revision},
            timeout=60,
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] is not None


# --- a client's 4xx is not the revision's ----------------------------------------------------


def _candidate_counts(url: str):
    # Before any request of the deployment its exposition has no series: nothing counted yet.
    counts = parse_exposition(httpx.get(f"{url}/metrics", timeout=30).text).get("medical", Counts())
    return counts.arm("candidate")


def test_a_clients_bad_requests_routed_to_the_candidate_do_not_count_against_it(fuzz_pool):
    url = fuzz_pool
    before = _candidate_counts(url)
    bad = [
        {"model": "medical", "prompt": "x", "max_tokens": 10**6},  # refused after routing (context)
        {"model": "medical", "prompt": "x " * 2_000, "max_tokens": 4},  # the engine: prompt too long
        {
            "model": "medical",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "s", "schema": {"type": "string", "maxLength": 100_000}},
            },
        },
    ]
    for body in bad:
        endpoint = "chat/completions" if "messages" in body else "completions"
        for _ in range(5):
            response = httpx.post(
                f"{url}/v1/{endpoint}",
                json=body,
                headers={**AUTH, "X-Baton-Revision": "candidate"},
                timeout=60,
            )
            assert response.status_code == 400, response.text
    after = _candidate_counts(url)
    assert (after.requests, after.errors, after.latency.n) == (
        before.requests,
        before.errors,
        before.latency.n,
    )
    good = httpx.post(
        f"{url}/v1/completions",
        json={"model": "medical", "prompt": "The patient", "max_tokens": 2},
        headers={**AUTH, "X-Baton-Revision": "candidate"},
        timeout=60,
    )
    assert good.status_code == 200
    assert _candidate_counts(url).requests == before.requests + 1
