"""baton's OpenAI endpoint against llama.cpp's own server (`llama-server --parallel N`), same GGUF,
same prompts; optionally also against llama-cpp-python's OpenAI server.

What it answers: does baton serve as fast as the server an Ollama or LM Studio user gets, at 1, 8
and 32 concurrent streaming clients? It prints p50/p99 time to first token and aggregate output
tokens/s for every server and the ratios baton / llama-server, from one run. Goals at every level:
tokens/s ratio >= 0.90, p50 TTFT <= 1.2x llama-server's + 5 ms. Both serve with the same slots
(`--slots`, baton's `max_ongoing_requests`), context per slot, threads and greedy decoding.

    python bench/serving_bench.py                       # both default models, one after the other
    python bench/serving_bench.py --shape 768x12        # only an untrained ~90 M-parameter llama
    python bench/serving_bench.py --shape 768x12 --quant F16 --quant Q4_K_M --quant TQ2_0
    python bench/serving_bench.py --gguf /path/model.gguf --max-tokens 64
    python bench/serving_bench.py --python-anchor       # and llama-cpp-python's server (one at a time)

baton's overhead per request is roughly constant (two Ray hops), so its ratio to llama.cpp
depends on how long llama.cpp itself takes. By default both ends are measured: the factory's
trained tiny medical v2 (1 MB, where llama.cpp answers in ~6 ms and the hops dominate) and an
untrained llama of a realistic width, 768x12 (random weights: the answers are gibberish, the
timings are those of a model that size). Each table ends with the HTTP round trip of both servers
on an endpoint that touches no model, the floor of what a request costs.

All servers are up for the whole run but only one is asked at a time (they would share 2 cores);
rounds alternate their order, so load from elsewhere on the machine hits them alike. Same
thread count, context size, prompts and greedy decoding. Traffic goes to 127.0.0.1 only and is
bounded (rounds x levels x requests).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

DEFAULT_SHAPE = "768x12"
PROMPTS = [
    "Summarise the triage note: 54 year old, chest pain radiating to the left arm since this morning.",
    "Extract the material from: 12 m3 of C30/37 concrete for the ground floor slab.",
    "Maintenance log: replaced the left main gear brake assembly after wear pin limit.",
    "Bug report: the export button crashes the app since version 2.3 when the list is empty.",
    "Triage: 8 year old with fever of 39.5 C for two days and a rash on the chest.",
    "Spec line: 240 linear metres of 100 mm PVC drainage pipe with fittings.",
    "Log: hydraulic pump B pressure fluctuating in cruise, pump replaced, leak check good.",
    "Bug: login page times out for users with more than 50 saved sessions.",
]


@dataclass
class Sample:
    ttft_s: float
    tokens: int


@dataclass
class LevelResult:
    concurrency: int
    samples: list[Sample]
    wall_s: float
    # Requests the server closed the connection on before answering (httpx's RemoteProtocolError):
    # counted, not fatal, so a server that drops connections is measured as doing so.
    dropped: int = 0

    def ttft_quantile(self, q: float) -> float:
        values = sorted(sample.ttft_s for sample in self.samples)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    @property
    def tokens_per_s(self) -> float:
        return sum(sample.tokens for sample in self.samples) / self.wall_s


async def one_request(
    client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int
) -> Sample:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    if first is None:
        raise RuntimeError(f"{url}: a streamed answer had no content")
    return Sample(ttft_s=first - started, tokens=tokens)


async def run_level(
    url: str, model: str, prompts: list[str], concurrency: int, requests: int, max_tokens: int
) -> LevelResult:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(prompts[index % len(prompts)])
    level = LevelResult(concurrency, [], 0.0)

    async def attempt(client: httpx.AsyncClient, prompt: str) -> None:
        try:
            level.samples.append(await one_request(client, url, model, prompt, max_tokens))
        except httpx.RemoteProtocolError:
            level.dropped += 1

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            await attempt(client, queue.get_nowait())

    async with httpx.AsyncClient(timeout=300) as client:
        await attempt(client, prompts[0])  # warm-up
        level.samples.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        level.wall_s = time.perf_counter() - started
    return level


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s")


@contextmanager
def served(command: list[str], port: int, ready_path: str) -> Iterator[str]:
    """A server process on 127.0.0.1:`port`, its URL once `ready_path` answers 200."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready_path}", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def llama_cpp_server(gguf: Path, context: int, threads: int) -> AbstractContextManager[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(context), "--n_threads", str(threads), "--n_threads_batch", str(threads),
        "--model_alias", "bench", "--verbose", "false",
        # By default a new request interrupts the one streaming: that is not serving 8 clients.
        "--interrupt_requests", "false",
    ]  # fmt: skip
    return served(command, port, "/v1/models")


def llama_server(gguf: Path, context: int, threads: int, slots: int) -> AbstractContextManager[str]:
    """llama.cpp's own server as its users run it, from the binary baton's engine runs."""
    from baton_serving.engines.llamacpp import server_binary

    port = free_port()
    command = [
        server_binary(), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--parallel", str(slots), "--ctx-size", str(context * slots), "--no-kv-unified",
        "--threads", str(threads), "--threads-batch", str(threads), "--alias", "bench",
        "--no-webui", "--log-verbosity", "1",
    ]  # fmt: skip
    return served(command, port, "/health")


@contextmanager
def baton_pool(gguf: Path, digest: str, context: int, threads: int, slots: int) -> Iterator[str]:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from baton_serving.app import apply_serve_config, wait_until_running
    from baton_serving.config import SERVE_PROCESS_ENV

    os.environ.update(SERVE_PROCESS_ENV)  # Ray's processes (the proxy, the controller) inherit it
    from baton_serving.config import INGRESS_APP, PoolConfig, render_serve_config

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        revision = {
            "name": "bench",
            "artifact": {"uri": str(gguf), "digest": digest, "size_bytes": gguf.stat().st_size},
            "context_length": context,
            "threads": threads,
            "max_ongoing_requests": slots,
            "resources": {"num_cpus": 1},
        }
        deployment = {"name": "bench", "revisions": [revision], "route": {"weights": {"bench": 1}}}
        # Without keys, as llama.cpp's server runs (bench/auth_bench.py measures what keys cost).
        pool = PoolConfig.model_validate(
            {
                "pool": "bench",
                "deployments": [deployment],
                "auth": {"enabled": False},
                "fetch": {"local_roots": [str(gguf.parent)]},  # the policy refuses unnamed roots
            }
        )
        apply_serve_config(render_serve_config(pool))
        wait_until_running([INGRESS_APP, "bench.bench"], 300)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while not httpx.get(f"{url}/v1/baton/revisions", timeout=30).json()["bench"]["bench"]["ready"]:
            if time.monotonic() > deadline:
                raise TimeoutError("baton engine not ready")
            time.sleep(0.5)
        yield url
    finally:
        serve.shutdown()
        ray.shutdown()


def visible_prompts(urls: list[str], max_tokens: int) -> list[str]:
    """The prompts whose streamed greedy answer shows text on every server.

    An untrained model may answer only tokens that decode to nothing (pieces of a UTF-8 character),
    which leaves no first token to time.
    """

    async def shows_text(prompt: str) -> bool:
        async with httpx.AsyncClient(timeout=300) as client:
            for url in urls:
                try:
                    await one_request(client, url, "bench", prompt, max_tokens)
                except RuntimeError:
                    return False
        return True

    kept = [prompt for prompt in PROMPTS if asyncio.run(shows_text(prompt))]
    if not kept:
        raise RuntimeError("the model answers no prompt with visible text")
    return kept


def interleaved(
    urls: dict[str, str], prompts: list[str], levels: dict[int, int], rounds: int, max_tokens: int
) -> dict[str, dict[int, LevelResult]]:
    """Rotate the servers' order round by round, so load from elsewhere on the machine hits all alike."""
    results: dict[str, dict[int, LevelResult]] = {
        name: {c: LevelResult(c, [], 0.0) for c in levels} for name in urls
    }
    names = list(urls)
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            for concurrency, requests in levels.items():
                try:
                    level = asyncio.run(
                        run_level(urls[name], "bench", prompts, concurrency, requests, max_tokens)
                    )
                except httpx.HTTPError as error:  # say which server failed, at which level
                    raise RuntimeError(f"{name}, c={concurrency}, round {index}: {error!r}") from error
                results[name][concurrency].samples.extend(level.samples)
                results[name][concurrency].dropped += level.dropped
                results[name][concurrency].wall_s += level.wall_s
    return results


def default_gguf() -> Path:
    from baton_models import catalog

    return catalog.ensure("medical", "v2", "Q4_K_M", score=False).path


def sized_gguf(shape: str, quant: str) -> Path:
    """An untrained llama `HIDDENxLAYERS` wide and deep, in `quant`, built once into the model cache."""
    from baton_models import catalog
    from baton_models.recipes import recipe
    from baton_models.shape import Shape

    hidden, layers = (int(part) for part in shape.lower().split("x"))
    smoke = recipe("medical", "smoke")
    sized = Shape(
        vocab=smoke.shape.vocab,
        hidden=hidden,
        layers=layers,
        heads=hidden // 64,
        kv_heads=hidden // 64,
        ffn=(hidden * 8 // 3 + 255) // 256 * 256,  # llama's 8/3 expansion, on 256-wide blocks
        context=512,
    )
    print(f"untrained llama {shape}: {sized.parameter_count() / 1e6:.0f} M parameters (built once)")
    return catalog.build(smoke.model_copy(update={"shape": sized}), quant, score=False).path


ANCHOR = "llama_server"
TOKENS_GOAL = 0.90  # baton's aggregate tokens/s at least this share of llama-server's
TTFT_GOAL = (1.2, 5.0)  # baton's p50 TTFT at most this factor of llama-server's plus these ms


def report(results: dict[str, dict[int, LevelResult]]) -> dict:
    """Every server's numbers per level, the ratios baton / llama-server and whether the goals hold."""
    rows = {}
    names = list(results)
    print(f"{'':24}" + "".join(f"{name:>14}" for name in names) + f"{'ratio':>9}  goal")
    for concurrency in results["baton"]:
        levels = {name: results[name][concurrency] for name in names}
        metrics = {
            "p50 TTFT ms": {name: level.ttft_quantile(0.5) * 1e3 for name, level in levels.items()},
            "p99 TTFT ms": {name: level.ttft_quantile(0.99) * 1e3 for name, level in levels.items()},
            "tokens/s": {name: level.tokens_per_s for name, level in levels.items()},
        }
        for metric, values in metrics.items():
            ours, theirs = values["baton"], values[ANCHOR]
            goal = ""
            if metric == "tokens/s":
                goal = "met" if ours >= TOKENS_GOAL * theirs else f"missed (>= {TOKENS_GOAL}x)"
            elif metric == "p50 TTFT ms":
                factor, slack = TTFT_GOAL
                goal = "met" if ours <= factor * theirs + slack else f"missed (<= {factor}x + {slack:g} ms)"
            label = f"c={concurrency} {metric}"
            rows[label] = {**{name: round(value, 2) for name, value in values.items()}}
            rows[label]["ratio"] = round(ours / theirs, 3)
            rows[label]["goal"] = goal
            cells = "".join(f"{values[name]:14.2f}" for name in names)
            print(f"{label:24}{cells}{ours / theirs:9.3f}  {goal}")
        dropped = {name: level.dropped for name, level in levels.items()}
        rows[f"c={concurrency} dropped"] = dropped
        print(f"{f'c={concurrency} dropped':24}" + "".join(f"{dropped[name]:14d}" for name in names))
    return rows


def round_trip_ms(url: str, count: int = 200) -> float:
    """p50 of sequential GETs that touch no model: the cost of the HTTP stack alone."""
    timings = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get(url).raise_for_status()
            timings.append(time.perf_counter() - started)
    return sorted(timings)[len(timings) // 2] * 1e3


def bench_model(gguf: Path, args: argparse.Namespace) -> dict:
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    levels = {c: max(args.requests, 2 * c) for c in args.concurrency}
    size_mb = gguf.stat().st_size / 1e6
    print(
        f"\nmodel {gguf} ({size_mb:.1f} MB), {args.threads} threads, {args.slots} slots, "
        f"max_tokens {args.max_tokens}, load average {os.getloadavg()[0]:.2f}"
    )
    with ExitStack() as servers:
        urls = {
            "baton": servers.enter_context(baton_pool(gguf, digest, args.context, args.threads, args.slots)),
            ANCHOR: servers.enter_context(llama_server(gguf, args.context, args.threads, args.slots)),
        }
        if args.python_anchor:
            urls["llama_cpp"] = servers.enter_context(llama_cpp_server(gguf, args.context, args.threads))
        prompts = visible_prompts(list(urls.values()), args.max_tokens)
        print(f"{len(prompts)} of {len(PROMPTS)} prompts answered with visible text (the others are skipped)")
        floors = {
            "baton": round_trip_ms(f"{urls['baton']}/healthz"),
            ANCHOR: round_trip_ms(f"{urls[ANCHOR]}/health"),
        }
        results = interleaved(urls, prompts, levels, args.rounds, args.max_tokens)
    rows = report(results)
    print(
        f"HTTP round trip without a model, p50: baton /healthz {floors['baton']:.2f} ms (Ray Serve proxy "
        f"-> ingress), llama-server /health {floors[ANCHOR]:.2f} ms; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    return {"model": str(gguf), "size_bytes": gguf.stat().st_size, "results": rows, "round_trip_ms": floors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="GGUF to serve instead of the default two models")
    parser.add_argument("--shape", help="serve only an untrained llama HIDDENxLAYERS, e.g. 768x12")
    parser.add_argument(
        "--quant", action="append", help="with --shape: the quantizations to compare (default Q4_K_M)"
    )
    parser.add_argument("--context", type=int, default=512, help="context per slot")
    parser.add_argument(
        "--threads", type=int, default=1, help="decode threads (1 is robust on a busy machine)"
    )
    parser.add_argument("--slots", type=int, default=8, help="requests decoded at once by each server")
    parser.add_argument(
        "--concurrency", type=int, action="append", help="client levels (default 1, 8 and 32)"
    )
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--requests", type=int, default=16, help="requests per level and round (at least 2 per client)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds, rotating which server goes first")
    parser.add_argument(
        "--python-anchor", action="store_true", help="also llama-cpp-python's server (one request at a time)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.concurrency = args.concurrency or [1, 8, 32]

    if args.gguf:
        models = [args.gguf]
    elif args.shape:
        models = [sized_gguf(args.shape, quant) for quant in args.quant or ["Q4_K_M"]]
    else:
        models = [default_gguf(), sized_gguf(DEFAULT_SHAPE, "Q4_K_M")]
    results = [bench_model(gguf, args) for gguf in models]
    if len(results) > 1:
        print(
            f"\n{'baton, tokens/s by model':40}"
            + "".join(f"{f'c={c}':>10}" for c in args.concurrency)
            + f"{'MB':>8}"
        )
        for result in results:
            cells = "".join(
                f"{result['results'][f'c={c} tokens/s']['baton']:10.1f}" for c in args.concurrency
            )
            print(f"{Path(result['model']).name[-40:]:40}{cells}{result['size_bytes'] / 1e6:8.1f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
