"""`python -m baton_models`: build the factory's models and benchmark manifests from the shell.

python -m baton_models build               what tests and the demo need (idempotent, cached)
python -m baton_models build --smoke       only the untrained smoke models (seconds)
python -m baton_models build --all         every domain, version and quantization
python -m baton_models build --domain medical --version v2 --quant Q4_K_M
python -m baton_models benchmarks          write manifests/examples/benchmarks/<domain>.yaml
python -m baton_models measure             the measurements table of docs/models.md
python -m baton_models tune JOB OUT         one fine-tuning job (JSON) into OUT, events on stdout
python -m baton_models dataset medical      chat JSON Lines of a domain's training documents
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from baton_models import catalog
from baton_models.domains import DOMAINS
from baton_models.gguf_export import QUANTIZATIONS
from baton_models.recipes import VERSIONS, recipe

# What the test suites and the demo load, scored where tests compare scores. Other quantizations
# of a trained model are made on demand in milliseconds from its cached weights.
DEFAULT_PLAN: tuple[tuple[str, str, str], ...] = (
    *((domain, "smoke", quant) for domain in DOMAINS for quant in ("F16", "Q8_0")),
    *((domain, version, "Q8_0") for domain in DOMAINS for version in ("v1", "v2", "v3")),
    ("aerospace", "v2", "Q4_K_M"),  # the demo's cheaper quantization (promoted) and lossy one (rejected)
    ("aerospace", "v2", "TQ2_0"),
    ("software", "v2", "F16"),
    ("software", "v2", "TQ2_0"),
    ("software", "v2-ternary", "TQ2_0"),
    ("software", "v2-ternary", "TQ1_0"),
)
SMOKE_PLAN = tuple(item for item in DEFAULT_PLAN if item[1] == "smoke")
# Everything docs/models.md measures: the default plan plus every quantization of each v2.
FULL_PLAN = tuple(
    dict.fromkeys(
        (
            *DEFAULT_PLAN,
            *((domain, "v2", quant) for domain in DOMAINS for quant in QUANTIZATIONS),
            ("software", "v2-ternary", "F16"),
        )
    )
)


def _plan(args: argparse.Namespace) -> tuple[tuple[str, str, str], ...]:
    if args.smoke:
        return SMOKE_PLAN
    if args.all:
        return FULL_PLAN
    if args.domain or args.version or args.quant:
        return tuple(
            (domain, version, quant)
            for domain in args.domain or DOMAINS
            for version in args.version or ("v1", "v2", "v3")
            for quant in args.quant or ("Q8_0",)
        )
    return DEFAULT_PLAN


Item = tuple[str, str, str]


def _report(item: Item, artifact: catalog.Artifact, seconds: float) -> str:
    domain, version, quant = item
    return (
        f"{domain:>12} {version:<10} {quant:<6} {artifact.size_bytes / 1e6:6.2f} MB {seconds:6.1f}s  "
        f"{artifact.path}  {json.dumps(artifact.manifest['benchmarkScores'])}"
    )


def build(args: argparse.Namespace) -> int:
    """Build the plan: untrained items here, each training family in its own single-threaded
    worker process (train, quantize, score), `--workers` of them at a time."""
    started = time.monotonic()
    families: dict[str, list[Item]] = {}
    for item in _plan(args):
        built = recipe(item[0], item[1])
        families.setdefault(built.trunk_hash if built.steps else "untrained", []).append(item)
    for item, artifact, seconds in catalog.ensure_many(families.pop("untrained", []), score=False):
        print(_report(item, artifact, seconds), flush=True)
    # Largest first: a v1/v2/v3 family trains 1.5 runs' worth of steps, a lone recipe one run.
    pending = sorted(families.values(), key=lambda items: -len(catalog.family(recipe(*items[0][:2]))))
    if pending:
        context = multiprocessing.get_context("spawn")
        workers = max(1, min(args.workers, len(pending)))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=catalog.use_one_thread) as pool:
            for results in pool.map(catalog.ensure_many, pending, [not args.no_score] * len(pending)):
                for item, artifact, seconds in results:
                    print(_report(item, artifact, seconds), flush=True)
    print(f"built in {time.monotonic() - started:.1f}s", flush=True)
    return 0


def write_benchmarks(args: argparse.Namespace) -> int:
    from baton_models.benchmarks import write_manifests

    for path in write_manifests(Path(args.out)):
        print(path)
    return 0


def measure(args: argparse.Namespace) -> int:
    from baton_models.measure import measurements_markdown

    print(measurements_markdown())
    return 0


def tune(args: argparse.Namespace) -> int:
    from baton_models.tune import main as run_job

    return run_job(Path(args.job), Path(args.out))


def dataset(args: argparse.Namespace) -> int:
    from baton_models.data import chat_jsonl

    sys.stdout.write(chat_jsonl(args.domain, args.documents))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m baton_models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build (or reuse) model artifacts")
    build_parser.add_argument("--domain", action="append", choices=DOMAINS, help="repeatable")
    build_parser.add_argument("--version", action="append", choices=VERSIONS, help="repeatable")
    build_parser.add_argument("--quant", action="append", choices=QUANTIZATIONS, help="repeatable")
    build_parser.add_argument("--smoke", action="store_true", help="only the untrained smoke models")
    build_parser.add_argument("--all", action="store_true", help="also every quantization of each v2")
    build_parser.add_argument("--no-score", action="store_true", help="skip benchmark runs for new builds")
    build_parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("BATON_BUILD_WORKERS", min(2, os.cpu_count() or 1))),
        help="training processes in parallel (default: $BATON_BUILD_WORKERS or 2)",
    )
    build_parser.set_defaults(handler=build)
    bench_parser = commands.add_parser("benchmarks", help="write the Benchmark resources")
    bench_parser.add_argument("--out", default="manifests/examples/benchmarks")
    bench_parser.set_defaults(handler=write_benchmarks)
    measure_parser = commands.add_parser("measure", help="print the measurements table")
    measure_parser.set_defaults(handler=measure)
    tune_parser = commands.add_parser("tune", help="run one fine-tuning job")
    tune_parser.add_argument("job", help="the job's JSON (baton_models.tune.TuneJob)")
    tune_parser.add_argument("out", help="directory the GGUF files are written to")
    tune_parser.set_defaults(handler=tune)
    dataset_parser = commands.add_parser("dataset", help="print a domain's chat JSON Lines")
    dataset_parser.add_argument("domain", choices=DOMAINS)
    dataset_parser.add_argument("--documents", type=int, default=500, help="documents (two examples each)")
    dataset_parser.set_defaults(handler=dataset)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
