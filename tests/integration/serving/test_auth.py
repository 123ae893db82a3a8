"""The pool's front door on a real Ray Serve: keys, scopes, who may pin, quotas, and isolation under load.

Keys are files in a keys directory as a mounted Secret gives them; clients are the official
`openai` client and plain HTTP. The load test floods one key far past its quota while another key
sends ordinary requests to the same deployment, and compares that key's p99 with a quiet run and
with the same flood on a key without a tight quota (what the quota protects against).
"""

from __future__ import annotations

import httpx
import openai
import pytest

from baton.evidence.samples import parse_exposition
from baton_serving.auth import ApiKey
from baton_serving.config import AuthConfig, PoolConfig

pytestmark = pytest.mark.integration

CONTEXT = 256
KEYS = {
    "medical-team": ApiKey(key="m" * 40, deployments=["medical"]),
    "ops": ApiKey(key="p" * 40, deployments=["*"], role="benchmark", requests_per_minute=100_000),
    "quiet": ApiKey(key="q" * 40, deployments=["*"], requests_per_minute=100_000, max_concurrent=64),
    "noisy": ApiKey(key="n" * 40, deployments=["*"], requests_per_minute=6, max_concurrent=2),
    "unbounded": ApiKey(key="u" * 40, deployments=["*"], requests_per_minute=100_000, max_concurrent=64),
    "tiny": ApiKey(key="t" * 40, deployments=["*"], requests_per_minute=2, max_concurrent=1),
}
KEY_SERIES = {"pool": "door-pool", "key": "tiny", "outcome": "rate_limit_exceeded"}


def bearer(key_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[key_id].key}"}


@pytest.fixture(scope="module")
def url(local_serve, model_artifact, tmp_path_factory) -> str:
    keys_dir = tmp_path_factory.mktemp("door-keys")
    for key_id, spec in KEYS.items():
        (keys_dir / key_id).write_text(spec.model_dump_json())
    artifact = model_artifact("medical", "smoke", "Q8_0")
    other = model_artifact("medical", "smoke", "Q4_K_M")

    def revision(name, built):
        return {
            "name": name,
            "artifact": {"uri": str(built.path), "digest": built.digest, "size_bytes": built.size_bytes},
            "context_length": CONTEXT,
            "resources": {"num_cpus": 0.05},
        }

    config = PoolConfig.model_validate(
        {
            "pool": "door-pool",
            "auth": AuthConfig(keys_dir=str(keys_dir), reload_interval_s=1.0).model_dump(),
            "deployments": [
                {
                    "name": "medical",
                    "revisions": [revision("champion", artifact), revision("candidate", other)],
                    "route": {"weights": {"champion": 100, "candidate": 0}},
                },
                {
                    "name": "software",
                    "revisions": [revision("champion", artifact)],
                    "route": {"weights": {"champion": 100}},
                },
            ],
        }
    )
    status = local_serve.deploy(config)
    assert all(state["ready"] for revisions in status.values() for state in revisions.values()), status
    return local_serve.url


def complete(
    url: str, headers: dict[str, str], model: str = "medical", max_tokens: int = 4
) -> httpx.Response:
    body = {"model": model, "prompt": "The patient", "max_tokens": max_tokens, "temperature": 0}
    return httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=60)


def test_no_key_or_a_wrong_key_is_an_openai_401(url):
    for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": "m" * 40}):
        response = complete(url, headers)
        assert response.status_code == 401, response.text
        error = response.json()["error"]
        assert error["code"] in {"missing_api_key", "invalid_api_key"} and error["type"]
        assert response.headers["www-authenticate"] == "Bearer"
        assert "x" * 40 not in response.text and "m" * 40 not in response.text
    for path in ("/v1/models", "/api/tags", "/api/ps"):
        assert httpx.get(f"{url}{path}", timeout=30).status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="y" * 40, max_retries=0).models.list()


def test_a_key_calls_and_lists_only_its_deployments(url):
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS["medical-team"].key, max_retries=0)
    assert [model.id for model in client.models.list()] == ["medical"]
    assert client.completions.create(model="medical", prompt="The patient", max_tokens=2).usage
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.completions.create(model="software", prompt="x", max_tokens=2)
    assert refused.value.body["code"] == "model_not_permitted"
    tags = httpx.get(f"{url}/api/tags", headers=bearer("medical-team"), timeout=30).json()
    assert [tag["name"] for tag in tags["models"]] == ["medical:latest"]
    nope = complete(url, bearer("medical-team"), model="nope")
    assert nope.status_code == 403  # scope first: a key learns nothing of deployments outside it


def test_only_the_benchmark_identity_may_pin_a_revision(url):
    pin = {"X-Baton-Revision": "candidate"}
    for _ in range(5):
        answered = complete(url, {**bearer("quiet"), **pin})
        assert answered.status_code == 200 and answered.headers["x-baton-revision"] == "champion"
    pinned = complete(url, {**bearer("ops"), **pin})
    assert pinned.status_code == 200 and pinned.headers["x-baton-revision"] == "candidate"


def test_over_its_quota_a_key_gets_429_with_retry_after_and_counted_by_id(url):
    codes = [complete(url, bearer("tiny"), max_tokens=1) for _ in range(4)]
    assert [response.status_code for response in codes] == [200, 200, 429, 429]
    refused = codes[2]
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    exposition = httpx.get(f"{url}/metrics", timeout=30).text
    refusals = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith("baton_api_key_requests_total{")
        and all(f'{label}="{value}"' in line for label, value in KEY_SERIES.items())
    ]
    assert refusals == [2.0], exposition
    assert KEYS["tiny"].key not in exposition
    # The refusals are the client's: no revision counts them.
    counts = parse_exposition(exposition)["medical"]
    assert counts.arm("champion").errors == 0
