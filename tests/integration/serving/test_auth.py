"""The pool's front door on a real Ray Serve: keys, scopes, who may pin, quotas, and isolation under load.

Keys are files in a keys directory as a mounted Secret gives them; clients are the official
`openai` client and plain HTTP. The load test floods one key far past its quota while another key
sends ordinary requests to the same deployment, and compares that key's p99 with a quiet run and
with the same flood on a key without a tight quota (what the quota protects against).
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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
QUIET_REQUESTS = 60
FLOOD_THREADS = 4


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


def p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[98]


def quiet_latencies(url: str) -> list[float]:
    latencies = []
    with httpx.Client(base_url=url, headers=bearer("quiet"), timeout=60) as client:
        body = {"model": "medical", "prompt": "The patient", "max_tokens": 4, "temperature": 0}
        for _ in range(QUIET_REQUESTS):
            started = time.perf_counter()
            assert client.post("/v1/completions", json=body).status_code == 200
            latencies.append(time.perf_counter() - started)
    return latencies


def under_flood(url: str, key_id: str) -> tuple[list[float], dict[int, int]]:
    """The quiet key's latencies while FLOOD_THREADS clients send `key_id`'s requests back to back."""
    stop = threading.Event()
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def flood() -> None:
        body = {"model": "medical", "prompt": "The patient", "max_tokens": 16, "temperature": 0}
        with httpx.Client(base_url=url, headers=bearer(key_id), timeout=60) as client:
            while not stop.is_set():
                status = client.post("/v1/completions", json=body).status_code
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                if status == 429:
                    time.sleep(0.005)  # a client that ignores Retry-After, but not a busy loop

    with ThreadPoolExecutor(FLOOD_THREADS) as pool:
        floods = [pool.submit(flood) for _ in range(FLOOD_THREADS)]
        # Measured once the flood runs at full speed (past its quota's burst, for a limited key).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(statuses.values()) < 4 * FLOOD_THREADS:
            time.sleep(0.1)
        with lock:
            statuses.clear()
        try:
            latencies = quiet_latencies(url)
        finally:
            stop.set()
        for running in floods:
            running.result()
    return latencies, statuses


@pytest.mark.xfail(
    strict=True,
    reason="measured 2026-12-02: four clients ignoring Retry-After get ~100 refusals/s, and each "
    "refusal still crosses Ray Serve's proxy and the ingress replica: on 2 cores the quiet key's p99 "
    "went 47 ms -> 145 ms (an admitted flood of the same clients: 115 ms). Refusing before the proxy "
    "(a limiter in front of Serve) is not built yet; docs/security.md.",
)
def test_a_key_over_its_quota_does_not_slow_another_keys_p99(url):
    quiet_latencies(url)  # warm
    alone = p99(quiet_latencies(url))
    limited, limited_statuses = under_flood(url, "noisy")
    unlimited, unlimited_statuses = under_flood(url, "unbounded")
    print(
        f"\nquiet key p99: alone {alone * 1e3:.1f} ms; beside an over-quota flood "
        f"{p99(limited) * 1e3:.1f} ms ({limited_statuses}); beside the same flood unlimited "
        f"{p99(unlimited) * 1e3:.1f} ms ({unlimited_statuses})"
    )
    assert unlimited_statuses.get(200, 0) > 0 and 429 not in unlimited_statuses
    assert limited_statuses.get(429, 0) > 10 * limited_statuses.get(200, 0)  # the quota holds
    # The claim: refusing the flood leaves the other key's p99 near its quiet value.
    assert p99(limited) <= 1.5 * alone + 0.02
