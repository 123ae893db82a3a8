"""What the front door costs per request: a real pool with API keys and quotas against the same pool without.

    python bench/auth_bench.py                  # the factory's tiny medical model, 4 rounds
    python bench/auth_bench.py --requests 400 --rounds 6

One local Ray Serve, one engine; the ingress is redeployed with authentication on (a key file,
quotas far above the load) and off (`auth.enabled: false`, what `baton up --no-auth` runs), round by
round in alternation, so load from elsewhere on the machine hits both alike. Each round sends
sequential one-token completions (the engine's share as small as it gets, so the door's share is
as large as it gets) and model listings (no engine at all). It prints p50/p99 of each with and
without and the ratios with / without, and the in-process cost of one admission (sha256 of the
key, constant-time compare with every key, both quotas, the metrics) measured directly.
Traffic goes to 127.0.0.1 only and is bounded (rounds x requests).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

KEY_COUNT = 50  # keys in the ring: every admission compares the presented key with all of them


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_keys(directory: Path) -> str:
    from baton_serving.auth import ApiKey

    for index in range(KEY_COUNT):
        spec = ApiKey(
            key=f"{index:04d}" + "k" * 40,
            deployments=["*"],
            requests_per_minute=10_000_000,
            max_concurrent=1_000,
        )
        (directory / f"key-{index}").write_text(spec.model_dump_json())
    return f"{KEY_COUNT - 1:04d}" + "k" * 40  # the last compared


def pool_config(gguf: Path, digest: str, auth: dict):
    from baton_serving.config import PoolConfig

    revision = {
        "name": "bench",
        "artifact": {"uri": str(gguf), "digest": digest, "size_bytes": gguf.stat().st_size},
        "context_length": 256,
        "resources": {"num_cpus": 1},
    }
    deployment = {"name": "bench", "revisions": [revision], "route": {"weights": {"bench": 1}}}
    return PoolConfig.model_validate({"pool": "auth-bench", "deployments": [deployment], "auth": auth})


def deploy(url: str, config, headers: dict[str, str]) -> None:
    from baton_serving.app import apply_serve_config, wait_until_running
    from baton_serving.config import INGRESS_APP, render_serve_config

    apply_serve_config(render_serve_config(config))
    wait_until_running([INGRESS_APP, "bench.bench"], 300)
    deadline = time.monotonic() + 300
    body = {"model": "bench", "prompt": "The patient", "max_tokens": 1}
    while True:  # the new ingress is in place once it answers as configured
        try:
            response = httpx.post(f"{url}/v1/completions", json=body, headers=headers, timeout=30)
            unauthenticated = httpx.get(f"{url}/v1/models", timeout=30).status_code
            if response.status_code == 200 and (unauthenticated == 401) == bool(headers):
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the ingress did not come up as configured")
        time.sleep(0.5)


def measure(url: str, headers: dict[str, str], requests: int) -> dict[str, list[float]]:
    body = {"model": "bench", "prompt": "The patient", "max_tokens": 1, "temperature": 0}
    timings: dict[str, list[float]] = {"completion": [], "listing": []}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(requests):
            started = time.perf_counter()
            assert client.post("/v1/completions", json=body).status_code == 200
            timings["completion"].append(time.perf_counter() - started)
            started = time.perf_counter()
            assert client.get("/v1/models").status_code == 200
            timings["listing"].append(time.perf_counter() - started)
    return timings


def admission_us(keys_dir: Path, key: str, count: int = 20_000) -> float:
    """One `Gate.enter` + `leave` in this process, in microseconds (the key compared last of all)."""
    from baton_serving.config import AuthConfig
    from baton_serving.gate import Gate

    gate = Gate("auth-bench", AuthConfig(keys_dir=str(keys_dir), reload_interval_s=3600))
    header = f"Bearer {key}"
    gate.leave(gate.enter(header))  # loads the ring
    started = time.perf_counter()
    for _ in range(count):
        gate.leave(gate.enter(header))
    return (time.perf_counter() - started) / count * 1e6


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds, alternating auth on and off")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from baton_models import catalog
    from baton_serving.config import SERVE_PROCESS_ENV

    model = catalog.ensure("medical", "v2", "Q4_K_M", score=False)
    keys_dir = Path(tempfile.mkdtemp(prefix="baton-auth-bench-"))
    key = write_keys(keys_dir)
    variants = {
        "with": ({"keys_dir": str(keys_dir)}, {"Authorization": f"Bearer {key}"}),
        "without": ({"enabled": False}, {}),
    }
    os.environ.update(SERVE_PROCESS_ENV)  # Ray's processes (the proxy, the controller) inherit it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    results: dict[str, dict[str, list[float]]] = {
        name: {"completion": [], "listing": []} for name in variants
    }
    try:
        for index in range(args.rounds):
            order = list(variants) if index % 2 == 0 else list(reversed(variants))
            for name in order:
                auth, headers = variants[name]
                deploy(url, pool_config(model.path, model.digest, auth), headers)
                measure(url, headers, 20)  # warm the new ingress replica
                for kind, values in measure(url, headers, args.requests).items():
                    results[name][kind].extend(values)
    finally:
        serve.shutdown()
        ray.shutdown()

    summary: dict[str, dict[str, float]] = {}
    print(f"\n{args.rounds} rounds x {args.requests} sequential requests of each kind, {KEY_COUNT} keys")
    print(
        f"{'request':<12}{'p50 with':>11}{'p50 without':>13}{'ratio':>7}"
        f"{'p99 with':>11}{'p99 without':>13}{'ratio':>7}"
    )
    for kind in ("completion", "listing"):
        row = {}
        for q in (0.5, 0.99):
            with_s, without_s = (quantile(results[name][kind], q) for name in ("with", "without"))
            row[f"p{round(q * 100)}_with_ms"] = with_s * 1e3
            row[f"p{round(q * 100)}_without_ms"] = without_s * 1e3
            row[f"p{round(q * 100)}_ratio"] = with_s / without_s
        summary[kind] = row
        print(
            f"{kind:<12}{row['p50_with_ms']:>9.2f}ms{row['p50_without_ms']:>11.2f}ms{row['p50_ratio']:>7.3f}"
            f"{row['p99_with_ms']:>9.2f}ms{row['p99_without_ms']:>11.2f}ms{row['p99_ratio']:>7.3f}"
        )
    cost = admission_us(keys_dir, key)
    summary["admission_us"] = {"per_request": cost}
    print(
        f"one admission in process (sha256, {KEY_COUNT} constant-time compares, quotas, metrics): "
        f"{cost:.1f} us"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
