"""LoRA adapters against full models: memory of N domains served over one base, and tuning time.

    python bench/lora_bench.py                          # N = 4: factory medical v1 Q8_0 and a 768x12 base
    python bench/lora_bench.py --n 3 --shape 768x12 --quant Q4_K_M --skip-tuning

Memory. Each revision of a deployment runs its own llama-server (`baton_serving.engines.llamacpp`);
an adapter revision runs it over the base file with `--lora`. This starts N such servers over one
base with N different adapters, then N servers of N different full models of the same shape and
quantization (the anchor, in the same run), asks each one question (so every weight page is
touched), and sums RSS and PSS (`/proc/PID/smaps_rollup`: a page shared by k processes counts 1/k)
over the llama-server processes. The Ray replica each revision also runs is the same in both
arms and is not counted. The adapters are random (rank 16, every block weight): memory does not
depend on their values; the full models are the base with per-model noise, so no two files share
pages.

Tuning time. The factory's job (`baton_models.tune.fine_tune`) on the shipped medical examples from
medical v1, full against LoRA (the example's settings), seconds per 1,000 training sequences
(steps x batch size) on one thread, as the job runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from baton_models.gguf_export import quantize, write_f16
from baton_models.lora import TARGETS, write_adapter
from baton_models.tune import Base, read_base
from baton_serving.engines import GenerationRequest
from baton_serving.engines.llamacpp import SERVER_BINARY, LlamaCppEngine
from serving_bench import sized_gguf  # beside this file: `python bench/...` puts bench/ on the path

RANK, ALPHA = 16, 32.0
MIB = 1 << 20
CONTEXT = 256
QUESTION = GenerationRequest(kind="completion", prompt="### Route this note.\n### Answer:\n", max_tokens=8)


def random_adapter(path: Path, base: Base, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    shapes = base.shape.tensor_shapes()
    tensors = {}
    for block in range(base.shape.layers):
        for target in TARGETS:
            rows, cols = shapes[f"blk.{block}.{target}.weight"]
            tensors[f"blk.{block}.{target}.weight.lora_a"] = rng.normal(0, 0.02, (RANK, cols))
            tensors[f"blk.{block}.{target}.weight.lora_b"] = rng.normal(0, 0.02, (rows, RANK))
    write_adapter(path, f"adapter-{seed}", tensors, ALPHA)
    return path


def full_model(path: Path, base: Base, quant: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    weights = {name: w + rng.normal(0, 1e-3, w.shape).astype(np.float32) for name, w in base.weights.items()}
    f16 = path.with_suffix(".F16.gguf")
    write_f16(f16, f"full-{seed}", base.shape, base.tokenizer, weights)
    if quant == "F16":
        return f16.rename(path)
    quantize(f16, path, quant)
    f16.unlink()
    return path


def servers_memory(models: list[tuple[Path, Path | None]]) -> dict[str, float]:
    """Start one engine per (model, adapter), touch its weights, sum its llama-server's RSS and PSS."""
    engines, starts = [], []
    try:
        for model, adapter in models:
            started = time.monotonic()
            engines.append(LlamaCppEngine(model, CONTEXT, threads=1, slots=1, adapter=adapter))
            starts.append(time.monotonic() - started)
            asyncio.run(engines[-1].generate(QUESTION))
        servers = [p for p in psutil.Process().children(recursive=True) if p.name() == SERVER_BINARY]
        assert len(servers) == len(models), f"{len(servers)} llama-servers for {len(models)} models"
        memory = [p.memory_full_info() for p in servers]
        return {
            "rss_mib": sum(m.rss for m in memory) / MIB,
            "pss_mib": sum(m.pss for m in memory) / MIB,
            "start_s": float(np.mean(starts)),
        }
    finally:
        for engine in engines:
            engine.close()


def bench_memory(base_path: Path, n: int, quant: str, work: Path) -> dict:
    base = read_base(base_path)
    size = base_path.stat().st_size / MIB
    adapters = [random_adapter(work / f"adapter-{i}.gguf", base, i) for i in range(n)]
    fulls = [full_model(work / f"full-{i}.gguf", base, quant, i) for i in range(n)]
    with_adapters = servers_memory([(base_path, adapter) for adapter in adapters])
    full = servers_memory([(path, None) for path in fulls])
    adapter_mib = adapters[0].stat().st_size / MIB
    print(
        f"\n{base_path.name}: {quant}, base {size:.1f} MiB, adapter {adapter_mib:.2f} MiB, rank {RANK}, N={n}"
    )
    print(f"{'':34}{'RSS MiB':>10}{'PSS MiB':>10}{'start s':>9}")
    for label, row in ((f"{n} adapters over one base", with_adapters), (f"{n} full models (anchor)", full)):
        print(f"{label:34}{row['rss_mib']:10.1f}{row['pss_mib']:10.1f}{row['start_s']:9.2f}")
    ratio = with_adapters["pss_mib"] / full["pss_mib"]
    saved = (full["pss_mib"] - with_adapters["pss_mib"]) / (n - 1) if n > 1 else 0.0
    print(f"PSS ratio adapters / full models: {ratio:.3f}; saved per extra domain: {saved:.1f} MiB")
    return {
        "model": base_path.name,
        "quantization": quant,
        "base_mib": round(size, 2),
        "adapter_mib": round(adapter_mib, 3),
        "n": n,
        "adapters": {k: round(v, 2) for k, v in with_adapters.items()},
        "full": {k: round(v, 2) for k, v in full.items()},
        "pss_ratio": round(ratio, 3),
        "saved_per_extra_domain_mib": round(saved, 2),
    }


def bench_tuning() -> dict:
    """Seconds per 1,000 training sequences, full fine-tune and LoRA, from medical v1 on the shipped data."""
    from baton_models import catalog
    from baton_models.tune import LoraJob, TuneJob, fine_tune, parse_dataset

    examples = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "tuning" / "medical.jsonl"
    pairs = parse_dataset(examples.read_bytes())
    artifact = catalog.ensure("medical", "v1", "Q8_0", score=False)
    base = read_base(artifact.path)
    common = {
        "name": "bench",
        "base": artifact.path,
        "base_digest": artifact.digest,
        "dataset": examples,
        "dataset_digest": "sha256:" + "0" * 64,
        "steps": 60,
        "batch_size": 16,
        "learning_rate": 1e-3,
        "warmup": 5,
        "seed": 0,
    }
    jobs = {
        "full": TuneJob(**common, quantizations=("Q8_0",)),
        "lora": TuneJob(**common, lora=LoraJob(rank=RANK, alpha=ALPHA, targets=TARGETS)),
    }
    seconds = {}
    for name, job in jobs.items():
        started = time.monotonic()
        fine_tune(job, base, pairs, lambda step, loss: None)
        seconds[name] = (time.monotonic() - started) / (job.steps * job.batch_size) * 1000
    print(
        f"\ntuning medical v1, s per 1,000 sequences: full {seconds['full']:.1f}, LoRA {seconds['lora']:.1f}"
    )
    print(f"ratio LoRA / full: {seconds['lora'] / seconds['full']:.3f}")
    return {name: round(value, 2) for name, value in seconds.items()} | {
        "ratio": round(seconds["lora"] / seconds["full"], 3)
    }


def main() -> None:
    from baton_models import catalog

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, help="domains (adapters, and full models)")
    parser.add_argument("--shape", action="append", help="untrained base HIDDENxLAYERS (default 768x12)")
    parser.add_argument("--quant", default="Q8_0", help="quantization of the base and the full models")
    parser.add_argument("--skip-factory", action="store_true", help="not the factory's medical v1")
    parser.add_argument("--skip-tuning", action="store_true", help="memory only")
    args = parser.parse_args()
    results: dict = {"memory": []}
    with tempfile.TemporaryDirectory(prefix="baton-lora-bench-") as work:
        bases = [] if args.skip_factory else [catalog.ensure("medical", "v1", args.quant, score=False).path]
        bases += [sized_gguf(shape, args.quant) for shape in args.shape or ["768x12"]]
        for index, base in enumerate(bases):
            directory = Path(work) / str(index)
            directory.mkdir()
            results["memory"].append(bench_memory(base, args.n, args.quant, directory))
    if not args.skip_tuning:
        results["tuning"] = bench_tuning()
    print("\n" + json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
