"""p99 latency of good requests while hostile ones run beside them, as a ratio to a quiet run.

What it answers: does a caller sending malformed or oversized requests (JSON nested 100,000 deep,
a body past the size limit, a response schema nested past the depth limit, a schema that makes a
huge grammar, invalid UTF-8, 600 messages) slow down a well-behaved caller? Each hostile request
must be refused with a 4xx before any engine works on it; the good caller's p99 should move
little. Goal: p99 ratio (hostile / quiet) <= 1.5 on 2 cores, and no 5xx.

    python bench/hostile_mix.py                  # the factory's medical v2, Q4_K_M
    python bench/hostile_mix.py --rounds 3 --good 60

Both phases run against one pool; rounds alternate quiet and hostile, so load from elsewhere on the
machine hits both alike. Traffic goes to 127.0.0.1 only and is bounded (rounds x requests).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_bench import baton_pool, default_gguf  # a sibling script

GOOD = {"model": "bench", "messages": [{"role": "user", "content": "Chest pain."}], "max_tokens": 8}


def hostile_bodies() -> list[bytes]:
    """One of each kind the limits refuse (RequestLimits' defaults)."""
    deep_schema: dict = {"type": "string"}
    for _ in range(40):
        deep_schema = {"type": "array", "items": deep_schema}
    return [
        b'{"model": "bench", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * 2_000_000}]}).encode(),
        json.dumps(
            {
                **GOOD,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "d", "schema": deep_schema},
                },
            }
        ).encode(),
        json.dumps(
            {
                **GOOD,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "g", "schema": {"type": "string", "maxLength": 100_000}},
                },
            }
        ).encode(),
        b'{"model": "bench", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        json.dumps({**GOOD, "messages": [{"role": "user", "content": "hi"}] * 600}).encode(),
    ]


async def good_caller(client: httpx.AsyncClient, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        response = await client.post("/v1/chat/completions", json=GOOD)
        response.raise_for_status()
        latencies.append(time.perf_counter() - began)
    return latencies


async def hostile_caller(client: httpx.AsyncClient, stop: asyncio.Event, statuses: Counter) -> None:
    bodies = hostile_bodies()
    index = 0
    while not stop.is_set():
        response = await client.post(
            "/v1/chat/completions",
            content=bodies[index % len(bodies)],
            headers={"content-type": "application/json"},
        )
        statuses[response.status_code] += 1
        index += 1


async def phase(url: str, good: int, hostile: int, statuses: Counter) -> list[float]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        stop = asyncio.Event()
        attackers = [asyncio.create_task(hostile_caller(client, stop, statuses)) for _ in range(hostile)]
        try:
            return await good_caller(client, good)
        finally:
            stop.set()
            await asyncio.gather(*attackers)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 2 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--good", type=int, default=50, help="good requests per phase and round")
    parser.add_argument("--hostile", type=int, default=2, help="concurrent hostile callers")
    args = parser.parse_args()
    gguf = args.gguf or default_gguf()
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    quiet: list[float] = []
    loud: list[float] = []
    statuses: Counter = Counter()
    with baton_pool(gguf, digest, 256, 1) as url:
        asyncio.run(phase(url, 5, 0, statuses))  # warm-up
        for _ in range(args.rounds):
            quiet += asyncio.run(phase(url, args.good, 0, statuses))
            loud += asyncio.run(phase(url, args.good, args.hostile, statuses))
    result = {
        "good_requests_per_phase": len(quiet),
        "quiet_p50_ms": round(statistics.median(quiet) * 1000, 1),
        "quiet_p99_ms": round(p99(quiet) * 1000, 1),
        "hostile_p50_ms": round(statistics.median(loud) * 1000, 1),
        "hostile_p99_ms": round(p99(loud) * 1000, 1),
        "p99_ratio": round(p99(loud) / p99(quiet), 2),
        "hostile_statuses": dict(sorted(statuses.items())),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
