"""The Ollama-compatible API of a real pool, spoken to by the official `ollama` Python client.

A local Ray Serve pool serves two llama.cpp revisions of the factory's smoke model (champion
Q8_0 at 80 %, candidate Q4_K_M at 20 %) behind the same ingress as the OpenAI API. Covered: chat
and generate, streamed (NDJSON) and whole, with Ollama's `done`/`done_reason` and nanosecond
timings; `format` as `json` and as a JSON schema (a pydantic model parses the answer); options
that reach the sampler (`top_k`, `seed`, `num_predict`, `repeat_penalty`); `/api/tags`, `/api/show`,
`/api/ps`, `/api/version`; errors in Ollama's shape with the right status and no echo of the
request; Ollama traffic split by the same router and counted by the canary's evidence; and
hypothesis-generated hostile bodies that never get a 5xx.
"""

from __future__ import annotations

import json
import time

import httpx
import ollama
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from baton.evidence.samples import Counts, parse_exposition
from baton_serving.config import PoolConfig
from tests.integration.serving.test_pool import Triage
from tests.plugins_serving import AUTH

pytestmark = pytest.mark.integration

CONTEXT = 256
POOL = "ollama-pool"
SECRET = "do-not-echo-7f3a"
FUZZ_EXAMPLES = 300
FUZZ_BUDGET_S = 180.0


@pytest.fixture(scope="module")
def artifacts(model_artifact) -> dict[str, object]:
    return {
        "champion": model_artifact("medical", "smoke", "Q8_0"),
        "candidate": model_artifact("medical", "smoke", "Q4_K_M"),
    }


@pytest.fixture(scope="module")
def url(local_serve, artifacts) -> str:
    config = PoolConfig.model_validate(
        {
            "pool": POOL,
            "deployments": [
                {
                    "name": "medical",
                    "revisions": [
                        {
                            "name": name,
                            "artifact": {
                                "uri": str(artifact.path),
                                "digest": artifact.digest,
                                "size_bytes": artifact.size_bytes,
                            },
                            "quantization": quantization,
                            "context_length": CONTEXT,
                            "resources": {"num_cpus": 0.05},
                        }
                        for (name, artifact), quantization in zip(
                            artifacts.items(), ("Q8_0", "Q4_K_M"), strict=True
                        )
                    ],
                    "route": {"weights": {"champion": 80, "candidate": 20}},
                }
            ],
        }
    )
    status = local_serve.deploy(config)
    assert all(state["ready"] for state in status["medical"].values()), status
    return local_serve.url


@pytest.fixture
def client(url) -> ollama.Client:
    return ollama.Client(host=url, timeout=120, headers=AUTH)


@pytest.fixture
def pinned(url) -> ollama.Client:
    """Always the champion, so sampling comparisons are not mixed across revisions."""
    return ollama.Client(host=url, timeout=120, headers={**AUTH, "X-Baton-Revision": "champion"})


def test_chat_and_generate_whole_and_streamed(client):
    chat = client.chat(
        "medical", messages=[{"role": "user", "content": "Chest pain."}], options={"num_predict": 8}
    )
    assert chat.model == "medical" and chat.done is True and chat.done_reason in {"stop", "length"}
    assert chat.message.role == "assistant" and isinstance(chat.message.content, str)
    assert 1 <= chat.eval_count <= 8 and chat.prompt_eval_count >= 1
    assert chat.load_duration == 0
    assert chat.total_duration >= chat.prompt_eval_duration + chat.eval_duration > 0
    assert chat.created_at.endswith("Z")

    parts = list(
        client.chat(
            "medical:latest",
            messages=[{"role": "user", "content": "Fever."}],
            stream=True,
            options={"num_predict": 8},
        )
    )
    *pieces, last = parts
    assert pieces and all(part.done is False and part.message.content for part in pieces)
    assert last.done is True and last.done_reason in {"stop", "length"} and last.message.content == ""
    assert len(pieces) <= last.eval_count <= 8
    assert last.total_duration >= last.prompt_eval_duration + last.eval_duration > 0
    assert all(part.model == "medical:latest" for part in parts)

    generated = client.generate("medical", "The patient", system="Be brief.", options={"num_predict": 6})
    assert generated.done and isinstance(generated.response, str) and 1 <= generated.eval_count <= 6

    raw = list(client.generate("medical", "The patient", raw=True, stream=True, options={"num_predict": 6}))
    assert raw[-1].done and raw[-1].response == "" and raw[-1].eval_count >= len(raw) - 1
    assert "".join(part.response for part in raw[:-1])


def test_format_json_schema_and_json(client, url):
    answer = client.chat(
        "medical",
        messages=[{"role": "user", "content": "62 year old, crushing chest pain."}],
        format=Triage.model_json_schema(),
        options={"temperature": 0, "num_predict": 200},
    )
    assert isinstance(Triage.model_validate_json(answer.message.content), Triage)
    exposition = httpx.get(f"{url}/metrics", timeout=30).text
    assert any(
        line.startswith("baton_structured_outputs_total{")
        and f'pool="{POOL}"' in line
        and 'valid="true"' in line
        and not line.endswith(" 0.0")
        for line in exposition.splitlines()
    )
    json_mode = client.generate("medical", "Answer in JSON.", format="json", options={"num_predict": 40})
    assert json_mode.response.lstrip().startswith("{")


def test_options_reach_the_sampler(pinned):
    def text(**options) -> str:
        return pinned.generate(
            "medical", "The patient", raw=True, options={"num_predict": 16, **options}
        ).response

    # An untrained model's distribution is flat: at a high temperature, seeds disagree; with
    # top_k 1 every seed takes the likeliest token.
    free = {text(temperature=1.5, seed=seed) for seed in range(4)}
    greedy = {text(temperature=1.5, seed=seed, top_k=1) for seed in range(4)}
    assert len(free) > 1 and len(greedy) == 1
    assert text(temperature=1.5, seed=7) == text(temperature=1.5, seed=7)
    assert text(temperature=0, repeat_penalty=10.0) != text(temperature=0, repeat_penalty=1.0)
    short = pinned.generate("medical", "The patient", raw=True, options={"num_predict": 3, "num_ctx": 4096})
    assert short.eval_count <= 3 and short.done_reason in {"stop", "length"}


def test_listings(client, url, artifacts):
    champion = artifacts["champion"]
    [listed] = client.list().models
    assert listed.model == "medical:latest" and listed.size == champion.size_bytes
    assert listed.digest == champion.digest.removeprefix("sha256:")
    assert listed.details.format == "gguf" and listed.details.quantization_level == "Q8_0"
    assert listed.modified_at is not None

    shown = client.show("medical")
    assert shown.details.quantization_level == "Q8_0" and shown.capabilities == ["completion"]
    assert f"num_ctx {CONTEXT}" in shown.parameters

    [running] = client.ps().models
    assert running.model == "medical:latest" and running.context_length == CONTEXT
    assert running.expires_at is not None and running.size_vram == 0

    assert httpx.get(f"{url}/api/version", timeout=30).json() == {"version": "0.5.0"}


def test_a_request_without_messages_or_prompt_only_loads(client):
    loaded = client.chat("medical", messages=[])
    assert loaded.done and loaded.done_reason == "load" and loaded.message.content == ""
    assert client.generate("medical", "").done_reason == "load"
    with pytest.raises(ollama.ResponseError) as missing:
        client.generate("nope", "")
    assert missing.value.status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/chat", {"model": "nope", "messages": [{"role": "user", "content": SECRET}]}, 404, "model"),
        (
            "/api/chat",
            {"model": "medical:v2", "messages": [{"role": "user", "content": SECRET}]},
            404,
            "model",
        ),
        (
            "/api/generate",
            {"model": "medical", "prompt": SECRET, "options": {"temperature": SECRET}},
            400,
            "options.temperature",
        ),
        (
            "/api/generate",
            {"model": "medical", "prompt": SECRET, "options": {"num_predict": 10**6}},
            400,
            "options.num_predict",
        ),
        (
            "/api/generate",
            {"model": "medical", "prompt": SECRET, "options": {"bogus": 1}},
            400,
            "options.bogus",
        ),
        ("/api/chat", {"model": "medical", "messages": [], "tools": [{"name": SECRET}]}, 400, "tools"),
        (
            "/api/chat",
            {"model": "medical", "messages": [{"role": "user", "content": "x", "images": [SECRET]}]},
            400,
            "messages[0].images",
        ),
        ("/api/generate", {"model": "medical", "prompt": "x", "format": {"type": SECRET}}, 400, "format"),
        ("/api/generate", {"model": "medical", "prompt": "x", "format": SECRET}, 400, "format"),
        ("/api/generate", {"model": "medical", "prompt": "x " * 2000, "stream": True}, 400, None),
        ("/api/show", {"model": SECRET}, 404, "model"),
    ],
)
def test_errors_are_ollama_shaped_and_echo_nothing(url, path, body, status, field):
    response = httpx.post(f"{url}{path}", json=body, headers=AUTH, timeout=60)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
    if field is not None:
        assert response.json()["error"].startswith(field)
    assert SECRET not in response.text


def test_unparseable_bodies_get_ollama_errors(url):
    for body in (b"{not json", b"[1]", b'{"model": "medical", "prompt": "\\ud800"}', b"x" * 2_000_000):
        response = httpx.post(f"{url}/api/generate", content=body, headers=AUTH, timeout=60)
        assert response.status_code in {400, 413} and set(response.json()) == {"error"}, response.text


def test_the_official_client_raises_on_errors(client):
    with pytest.raises(ollama.ResponseError) as error:
        client.chat("nope", messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 404 and "model" in error.value.error
    with pytest.raises(ollama.ResponseError) as error:
        list(client.generate("medical", "x", stream=True, options={"temperature": 9}))
    assert error.value.status_code == 400 and error.value.error.startswith("options.temperature")


def test_ollama_traffic_is_split_and_counted_by_the_canary(url):
    before = parse_exposition(httpx.get(f"{url}/metrics", timeout=30).text).get("medical", Counts())
    answered = []
    for index in range(40):
        path, body = (
            ("/api/chat", {"messages": [{"role": "user", "content": "Cough."}]})
            if index % 2
            else ("/api/generate", {"prompt": "The patient"})
        )
        response = httpx.post(
            f"{url}{path}",
            json={"model": "medical", "stream": index % 4 < 2, "options": {"num_predict": 2}, **body},
            headers=AUTH,
            timeout=60,
        )
        assert response.status_code == 200, response.text
        answered.append(response.headers["x-baton-revision"])
    assert set(answered) == {"champion", "candidate"}
    deadline = time.monotonic() + 30
    while True:
        after = parse_exposition(httpx.get(f"{url}/metrics", timeout=30).text)["medical"]
        grown = after.increase_since(before)
        counted = {revision: grown.arm(revision).requests for revision in ("champion", "candidate")}
        if sum(counted.values()) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert counted == {revision: answered.count(revision) for revision in ("champion", "candidate")}
    exposition = httpx.get(f"{url}/metrics", timeout=30).text
    assert 'endpoint="ollama_chat"' in exposition and 'endpoint="ollama_generate"' in exposition


# --- hostile bodies --------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
any_json = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
options = (
    st.fixed_dictionaries(
        {},
        optional={
            "num_predict": st.integers(-3, 4) | any_json,
            "temperature": st.floats(-1, 3) | any_json,
            "top_k": st.integers(-2, 2**40) | any_json,
            "top_p": st.floats(-1, 2),
            "seed": st.integers(-(2**70), 2**70),
            "repeat_penalty": st.floats(-1, 20) | any_json,
            "stop": st.lists(st.text(max_size=300), max_size=6) | any_json,
            "num_ctx": any_json,
        },
    )
    | any_json
)
fields = {
    "format": st.sampled_from(["", "json", "xml"])
    | any_json
    | st.just({"type": "object", "maxLength": 10**6}),
    "options": options,
    "stream": st.booleans() | any_json,
    "keep_alive": any_json,
    "think": any_json,
    "raw": st.booleans(),
    "system": st.text(max_size=50) | any_json,
    "images": any_json,
    "tools": any_json,
}
bodies = st.one_of(
    st.tuples(
        st.just("/api/chat"),
        st.fixed_dictionaries(
            {
                "model": st.sampled_from(["medical", "medical:latest", "medical:x", ""]) | any_json,
                "messages": st.lists(
                    st.fixed_dictionaries(
                        {
                            "role": st.sampled_from(["user", "system", "assistant", "x"]),
                            "content": st.text(max_size=80),
                        },
                        optional={"images": any_json, "tool_calls": any_json},
                    ),
                    max_size=3,
                )
                | any_json,
            },
            optional=fields,
        ),
    ),
    st.tuples(
        st.just("/api/generate"),
        st.fixed_dictionaries(
            {"model": st.just("medical") | any_json, "prompt": st.text(max_size=80) | any_json},
            optional={**fields, "suffix": any_json, "template": any_json, "context": any_json},
        ),
    ),
    st.tuples(st.sampled_from(["/api/chat", "/api/generate", "/api/show"]), any_json),
)


def test_generated_hostile_bodies_never_get_a_500(url):
    failures: list[str] = []
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + FUZZ_BUDGET_S
    client = httpx.Client(base_url=url, headers=AUTH, timeout=60)

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(bodies)
    def send(request) -> None:
        if time.monotonic() > deadline:
            return
        path, body = request
        if isinstance(body, dict) and isinstance(body.get("options"), dict):
            body["options"].setdefault("num_predict", 2)  # the budget is for many requests
        response = client.post(path, content=json.dumps(body).encode())
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{path} {response.status_code}: {response.text[:200]}")
        elif response.status_code >= 400 and not isinstance(response.json().get("error"), str):
            failures.append(f"{path} {response.status_code} not in Ollama's shape: {response.text[:200]}")
        elif '"error"' in response.text and response.status_code == 200:
            failures.append(f"{path}: an error inside a stream: {response.text[-200:]}")

    send()
    print(f"\nOllama fuzz: {sum(statuses.values())} requests, by status {dict(sorted(statuses.items()))}")
    assert failures == []
    assert sum(statuses.values()) >= 50
    answer = httpx.post(
        f"{url}/api/generate",
        json={"model": "medical", "prompt": "x", "stream": False},
        headers=AUTH,
        timeout=60,
    )
    assert answer.status_code == 200 and answer.json()["done"] is True
