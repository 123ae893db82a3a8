"""A deployment's `engine.maxOutputTokens` and `structuredOutput`, enforced by the real ingress.

Both fields are promises to every client of a ModelDeployment: no answer longer than the cap is ever
asked of an engine (a larger `max_tokens` is an OpenAI-style 400, never clamped), and a chat request
that sends no `response_format` is answered in the deployment's schema, counted in the validity
metric. The pool runs for real: Ray Serve, the OpenAI ingress, llama.cpp on the factory's smoke model.
"""

from __future__ import annotations

import json
import time
from typing import Literal

import httpx
import openai
import pytest
from pydantic import BaseModel

from baton.api import ModelDeployment, ModelPool
from baton.rollout.render import render_pool
from baton_serving.config import PoolConfig
from tests.plugins_serving import CLIENT_AUTH, CLIENT_KEY

pytestmark = pytest.mark.integration

CAP = 200
CONTEXT = 256


class Triage(BaseModel):
    urgency: Literal["low", "medium", "high"]
    age: int


def resources(path: str, digest: str, size: int, schema: dict) -> tuple[ModelPool, ModelDeployment]:
    """The pool and deployment a user writes, with the champion a shell would have put in status."""
    artifact = {"uri": path, "digest": digest, "quantization": "Q8_0", "sizeBytes": size}
    pool = ModelPool.model_validate(
        {"apiVersion": "baton.dev/v1alpha1", "kind": "ModelPool", "metadata": {"name": "contract"}}
    )
    deployment = ModelDeployment.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "triage"},
            "spec": {
                "domain": "medical",
                "pool": "contract",
                "model": {"version": "v1", "artifact": artifact},
                "engine": {"contextLength": CONTEXT, "maxOutputTokens": CAP},
                "structuredOutput": {"name": "triage", "jsonSchema": schema},
                "analysis": {"ungated": True},
            },
            "status": {"champion": {"revision": "triage-v1", "version": "v1", "artifact": artifact}},
        }
    )
    return pool, deployment


@pytest.fixture(scope="module")
def deploy(local_serve, model_artifact):
    """Deploys the pool rendered from the resources (the control plane's own rendering) with `schema`."""
    model = model_artifact("medical", "smoke", "Q8_0")

    def apply(schema: dict) -> PoolConfig:
        pool, deployment = resources(str(model.path), model.digest, model.size_bytes, schema)
        rendered = render_pool(pool, [deployment]).config
        wire = rendered.model_dump(mode="json")
        for revision in wire["deployments"][0]["revisions"]:
            revision["resources"]["num_cpus"] = 0.05  # the smoke model is tiny; other tests' engines may run
        config = PoolConfig.model_validate(wire)
        local_serve.deploy(config)
        return config

    apply(Triage.model_json_schema())
    return apply


@pytest.fixture
def client(local_serve) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{local_serve.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=120)


def structured_answers(url: str) -> dict[str, float]:
    """`baton_structured_outputs_total` of the triage deployment, by `valid`."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("baton_structured_outputs_total{") and 'deployment="triage"' in line:
            valid = line.split('valid="', 1)[1].split('"', 1)[0]
            counts[valid] = counts.get(valid, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def ask(client: openai.OpenAI, **fields):
    return client.chat.completions.create(
        model="triage",
        messages=[{"role": "user", "content": "62 year old, crushing chest pain."}],
        temperature=0,
        **fields,
    )


def test_max_tokens_past_the_cap_is_an_openai_400_naming_the_field(deploy, client):
    for endpoint in ("chat", "completions"):
        with pytest.raises(openai.BadRequestError) as refused:
            if endpoint == "chat":
                ask(client, max_tokens=CAP + 1)
            else:
                client.completions.create(model="triage", prompt="The patient", max_tokens=CAP + 1)
        error = refused.value.body
        assert error["param"] == "max_tokens" and f"at most {CAP} output tokens" in error["message"], error
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, max_completion_tokens=CAP + 1)
    assert refused.value.body["param"] == "max_completion_tokens"
    # At the cap itself the request is served.
    assert client.completions.create(model="triage", prompt="The patient", max_tokens=CAP).usage


def test_a_request_without_response_format_is_answered_in_the_deployments_schema(deploy, client, local_serve):
    before = structured_answers(local_serve.url)
    answer = ask(client, max_tokens=CAP)
    Triage.model_validate_json(answer.choices[0].message.content)
    after = structured_answers(local_serve.url)
    assert after.get("true", 0) == before.get("true", 0) + 1, (before, after)
    # The client's explicit `text` turns the default off: nothing is constrained or counted.
    ask(client, max_tokens=8, response_format={"type": "text"})
    assert structured_answers(local_serve.url) == after


def test_a_default_schema_the_ingress_refuses_fails_only_the_requests_relying_on_it(deploy, local_serve):
    deploy({"type": "nonsense"})
    body = {"model": "triage", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
    deadline = time.monotonic() + 60
    while True:  # the new routing table reaches the ingress through Serve's reconfigure
        response = httpx.post(
            f"{local_serve.url}/v1/chat/completions", json=body, headers=CLIENT_AUTH, timeout=60
        )
        if response.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert response.status_code == 500, response.text
    error = response.json()["error"]
    assert error["type"] == "server_error" and "default response schema is refused" in error["message"]
    text = {**body, "response_format": {"type": "text"}}
    assert (
        httpx.post(
            f"{local_serve.url}/v1/chat/completions", json=text, headers=CLIENT_AUTH, timeout=60
        ).status_code
        == 200
    )
    assert json.loads(httpx.get(f"{local_serve.url}/healthz", timeout=30).text)["status"] == "ok"


def test_content_part_arrays_from_the_openai_client_are_served_as_text(deploy, client):
    """OpenAI's client sends a message's text as `[{"type": "text", "text": ...}]` when asked to
    (its typed `ChatCompletionContentPartTextParam`): the same answer as the plain string."""
    parts = [{"type": "text", "text": "62 year old,"}, {"type": "text", "text": "crushing chest pain."}]
    as_parts = client.chat.completions.create(
        model="triage",
        messages=[
            {"role": "system", "content": [{"type": "text", "text": "Triage."}]},
            {"role": "user", "content": parts},
        ],
        temperature=0,
        seed=7,
        max_tokens=8,
        response_format={"type": "text"},
    )
    as_text = client.chat.completions.create(
        model="triage",
        messages=[
            {"role": "system", "content": "Triage."},
            {"role": "user", "content": "62 year old,\ncrushing chest pain."},
        ],
        temperature=0,
        seed=7,
        max_tokens=8,
        response_format={"type": "text"},
    )
    assert as_parts.choices[0].message.content == as_text.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:  # an image part is not text
        client.chat.completions.create(
            model="triage",
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}
            ],
            max_tokens=8,
        )
    assert refused.value.body["param"].startswith("messages[0].content"), refused.value.body
