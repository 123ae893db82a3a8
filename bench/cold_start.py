"""Cold start from zero: how long a request to a domain that scaled to zero waits for its first token,
per model size, against llama.cpp's own server started cold on the same GGUF in the same run.

    python bench/cold_start.py                      # the trained tiny medical v2 and an untrained 768x12
    python bench/cold_start.py --shape 768x12 --rounds 8
    python bench/cold_start.py --gguf /path/model.gguf

Per model and round, one after the other (they would share 2 cores):

- anchor, llama-server: the process started with the flags baton's engine gives it (slots, context
  per slot, threads, `--no-warmup`), on a TCP port; its own load time (start until `/health`
  answers 200) and start until the first streamed token of one request sent as soon as it is up;
- baton, scaled to zero: the engine replica idle past `scale_to_zero_after_s` (its llama-server
  stopped), then one streamed chat request: arrival at the ingress until the first token; the
  engine's own load time of that wake (`load_seconds` in its status); and the warm time to first
  token of the next request, for the cost of the load alone;
- a new Ray replica: a second revision of the same file deployed into the running pool, until it
  has loaded: the least Ray Serve's own `min_replicas: 0` would cost (a new worker process, the
  artifact verified again, then the load), before any autoscaler delay.

Ratios: baton's cold time to first token over llama-server's start-to-first-token, and over its
load time alone. Traffic goes to 127.0.0.1 only and is bounded (rounds x 3 requests per model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.testbed.processes import children_rss

from serving_bench import (  # a sibling script
    DEFAULT_SHAPE,
    baton_pool,
    bench_pool_config,
    default_gguf,
    free_port,
    sized_gguf,
    visible_prompts,
)

IDLE_S = 1.0
POLL_S = 0.01  # llama-server's /health, a cheap local call
STATUS_POLL_S = 0.05  # an engine's status, a call through Ray
# Each engine replica's share of Ray's 2 CPUs: the bench's revision and a new one fit at once.
NUM_CPUS = 0.5


def first_token_s(url: str, prompt: str, max_tokens: int) -> float:
    """Seconds from sending one streamed chat request until its first chunk with text."""
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choices = json.loads(line[6:]).get("choices") or [{}]
                if (choices[0].get("delta") or {}).get("content"):
                    return time.perf_counter() - started
    raise RuntimeError(f"{url}: a streamed answer had no text")


def llama_server_cold(gguf: Path, args: argparse.Namespace, prompt: str) -> tuple[float, float]:
    """(start until /health is 200, start until the first token) of a llama-server started now."""
    from baton_serving.engines.llamacpp import server_binary

    port = free_port()
    command = [
        server_binary(), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(args.slots), "--ctx-size", str(args.context * args.slots), "--no-kv-unified",
        "--threads", str(args.threads), "--threads-batch", str(args.threads),
        "--no-webui", "--log-verbosity", "1", "--no-warmup",
    ]  # fmt: skip
    started = time.perf_counter()
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=5) as client:
            while True:
                try:
                    if client.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:  # not listening yet
                    pass
                if server.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError("llama-server did not load the model")
                time.sleep(POLL_S)
        loaded = time.perf_counter() - started
        return loaded, loaded + first_token_s(url, prompt, args.max_tokens)
    finally:
        server.kill()  # measured: no need to wait for its graceful shutdown
        server.wait(timeout=30)


def engine_status(revision: str = "bench") -> dict:
    """The engine replica's own status, asked directly: status calls do not count as activity."""
    from ray import serve

    from baton_serving.config import ENGINE_DEPLOYMENT, engine_app_name

    handle = serve.get_deployment_handle(ENGINE_DEPLOYMENT, app_name=engine_app_name("bench", revision))
    return handle.status.remote().result(timeout_s=60)


def until(predicate, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out")
        time.sleep(STATUS_POLL_S)


def baton_cold(url: str, prompt: str, max_tokens: int) -> tuple[float, float, float, int]:
    """(cold time to first token, the engine's load time of that wake, warm time to first token,
    resident bytes of the engine's llama-server once loaded: what scaling to zero frees)."""
    until(lambda: engine_status()["loaded"] is False)
    cold = first_token_s(url, prompt, max_tokens)
    status = engine_status()
    warm = first_token_s(url, prompt, max_tokens)
    resident = sum(children_rss(status["pid"], "llama-server").values())
    return cold, status["load_seconds"], warm, resident


def new_replica_s(gguf: Path, digest: str, args: argparse.Namespace, index: int) -> float:
    """Seconds from deploying another revision of the same file until its replica has loaded it."""
    from baton_serving.app import apply_serve_config
    from baton_serving.config import render_serve_config

    fresh = f"fresh{index}"
    pool = bench_pool_config(
        gguf, digest, args.context, args.threads, args.slots, ("bench", fresh), IDLE_S, NUM_CPUS
    )
    started = time.perf_counter()
    apply_serve_config(render_serve_config(pool))

    def loaded() -> bool:
        try:
            return engine_status(fresh)["ready"] is True
        except Exception:  # Serve has not built the application yet
            return False

    until(loaded, 300)
    took = time.perf_counter() - started
    only = bench_pool_config(
        gguf, digest, args.context, args.threads, args.slots, ("bench",), IDLE_S, NUM_CPUS
    )
    apply_serve_config(render_serve_config(only))
    return took


def p50(values: list[float]) -> float:
    return statistics.median(values)


def bench_model(gguf: Path, args: argparse.Namespace) -> dict:
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    size_mb = gguf.stat().st_size / 1e6
    print(
        f"\nmodel {gguf} ({size_mb:.1f} MB), {args.threads} threads, {args.slots} slots, context "
        f"{args.context} per slot, load average {os.getloadavg()[0]:.2f}"
    )
    runs: dict[str, list[float]] = {
        key: []
        for key in ("anchor_load", "anchor_first_token", "cold_first_token", "cold_load", "warm", "replica")
    }
    resident: list[int] = []
    with baton_pool(gguf, digest, args.context, args.threads, args.slots, IDLE_S, NUM_CPUS) as url:
        (prompt, *_) = visible_prompts([url], args.max_tokens)
        for index in range(args.rounds):
            load, first = llama_server_cold(gguf, args, prompt)
            runs["anchor_load"].append(load)
            runs["anchor_first_token"].append(first)
            cold, cold_load, warm, held = baton_cold(url, prompt, args.max_tokens)
            resident.append(held)
            runs["cold_first_token"].append(cold)
            runs["cold_load"].append(cold_load)
            runs["warm"].append(warm)
            if index < args.replica_rounds:
                runs["replica"].append(new_replica_s(gguf, digest, args, index))
    medians = {key: p50(values) * 1e3 for key, values in runs.items() if values}
    print(f"{'p50 over ' + str(args.rounds) + ' rounds, ms':58}{'':>10}")
    rows = [
        ("llama-server: start -> /health 200 (its load time)", "anchor_load"),
        ("llama-server: start -> first token", "anchor_first_token"),
        ("baton, scaled to zero: request -> first token", "cold_first_token"),
        ("  of which the engine's llama-server load", "cold_load"),
        ("baton, loaded: request -> first token", "warm"),
        ("a new Ray replica: deploy -> loaded (min_replicas: 0)", "replica"),
    ]
    for label, key in rows:
        if key in medians:
            print(f"{label:58}{medians[key]:10.1f}")
    ratios = {
        "cold / llama-server start -> first token": medians["cold_first_token"]
        / medians["anchor_first_token"],
        "cold / llama-server load": medians["cold_first_token"] / medians["anchor_load"],
    }
    if "replica" in medians:
        ratios["new Ray replica / cold"] = medians["replica"] / medians["cold_first_token"]
    for label, ratio in ratios.items():
        print(f"{'ratio ' + label:58}{ratio:10.2f}")
    freed_mb = statistics.median(resident) / 1e6
    print(f"{'memory freed by scaling to zero (llama-server RSS), MB':58}{freed_mb:10.1f}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    return {
        "model": str(gguf),
        "size_bytes": gguf.stat().st_size,
        "runs_s": runs,
        "p50_ms": medians,
        "ratios": ratios,
        "freed_rss_bytes": resident,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="GGUF to serve instead of the default two models")
    parser.add_argument("--shape", help="only an untrained llama HIDDENxLAYERS, e.g. 768x12")
    parser.add_argument("--context", type=int, default=512, help="context per slot")
    parser.add_argument("--threads", type=int, default=1, help="decode threads")
    parser.add_argument("--slots", type=int, default=8, help="parallel slots of each server")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="cold starts per model and server")
    parser.add_argument(
        "--replica-rounds", type=int, default=2, help="of those, rounds that also deploy a new Ray replica"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.gguf:
        models = [args.gguf]
    elif args.shape:
        models = [sized_gguf(args.shape, "Q4_K_M")]
    else:
        models = [default_gguf(), sized_gguf(DEFAULT_SHAPE, "Q4_K_M")]
    results = [bench_model(gguf, args) for gguf in models]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
