"""Each domain's v2 in every quantization, measured through baton itself: size, score and tokens/s.

The per-domain quantization table of docs/models.md comes from here, in one command. One local Ray
Serve pool serves every quantization of each domain's v2 as a revision of that domain's deployment;
baton's own benchmark runner (the one the offline gate uses: pinned revisions, the chat template,
schema suites under their grammar, the analysis core's scorers) asks each the domain's held-out
suites, paired against Q8_0 (what the demo's champions serve). Per quantization it prints the
file size, the mean item score per suite, the median per-item generation throughput (tokens over
the request's latency, as `requireGain: tokensPerSecond` measures it, so baton's own per-request
cost is in it) and what the demo's rule for a cheaper quantization decides against Q8_0:
non-inferiority within 0.05 on every suite and a file at least 30 % smaller.

    python bench/quantizations.py                          # all four domains, 64 items per suite
    python bench/quantizations.py --domain aerospace --items 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from baton.analysis.gain import Footprint
from baton.analysis.gates import offline_outcome
from baton.analysis.measurements import BenchmarkResult, BenchmarkRun
from baton.api.deployment import AnalysisSpec
from baton.demo import QUANTIZED_GAIN, QUANTIZED_MARGIN
from baton.evidence.providers.benchmark import BenchmarkRunner
from baton.local.dataplane import LocalKeys, LocalServe
from baton.rollout.model import RevisionState
from baton_models import catalog
from baton_models.benchmarks import benchmarks
from baton_models.domains import DOMAINS
from baton_serving.config import FetchPolicy, PoolConfig
from serving_bench import free_port  # a sibling script

ANCHOR = "Q8_0"
QUANTS = ("F16", "Q8_0", "Q4_K_M", "TQ2_0", "TQ1_0")
CONTEXT = 256
READY_TIMEOUT_S = 600.0


def revision(quantization: str) -> str:
    return quantization.lower().replace("_", "-")


def pool(artifacts: dict[tuple[str, str], catalog.Artifact], domains: list[str]) -> PoolConfig:
    """One deployment per domain, one revision per quantization; Q8_0 takes the (unused) traffic."""
    deployments = [
        {
            "name": domain,
            "revisions": [
                {
                    "name": revision(quantization),
                    "quantization": quantization,
                    "artifact": {
                        "uri": str(artifacts[(domain, quantization)].path),
                        "digest": artifacts[(domain, quantization)].digest,
                        "size_bytes": artifacts[(domain, quantization)].size_bytes,
                    },
                    "context_length": CONTEXT,
                    "resources": {"num_cpus": 0.05},
                }
                for quantization in QUANTS
            ],
            "route": {"weights": {revision(ANCHOR): 1}},
        }
        for domain in domains
    ]
    return PoolConfig.model_validate(
        {
            "pool": "quantizations",
            "deployments": deployments,
            "fetch": FetchPolicy(local_roots=[str(catalog.cache_root())]).model_dump(mode="json"),
        }
    )


def wait_ready(serve: LocalServe, domains: list[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        health = serve.revision_health()
        states = {(d, r): h.state for d in domains for r, h in health.get(d, {}).items()}
        failed = {
            key: health[key[0]][key[1]].message for key, s in states.items() if s == RevisionState.FAILED
        }
        if failed:
            raise SystemExit(f"revisions refused: {failed}")
        if len(states) == len(domains) * len(QUANTS) and set(states.values()) == {RevisionState.READY}:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"revisions not ready after {READY_TIMEOUT_S:.0f} s: {states}")
        time.sleep(1)


def arm(result: BenchmarkResult, name: str) -> tuple[list[float], list[float], int]:
    """One revision's item scores, per-item tokens/s and errors in a run."""
    mine = [item for item in result.results if item.revision == name]
    scores = [item.score for item in mine if item.error is None and item.score is not None]
    speeds = [
        item.output_tokens / item.latency_s
        for item in mine
        if item.error is None and item.output_tokens > 0 and item.latency_s > 0
    ]
    return scores, speeds, sum(item.error is not None for item in mine)


def measure_domain(runner: BenchmarkRunner, domain: str, items: int, sizes: dict[str, int]) -> list[str]:
    suites = benchmarks(domain, items)
    scores: dict[str, dict[str, list[float]]] = {q: {} for q in QUANTS}
    speeds: dict[str, list[float]] = {q: [] for q in QUANTS}
    errors = dict.fromkeys(QUANTS, 0)
    verdicts: dict[str, str] = {ANCHOR: "(champion)"}
    rule = AnalysisSpec.model_validate(
        {
            "benchmarks": [{"name": suite.metadata.name} for suite in suites],
            "mode": "nonInferiority",
            "margin": QUANTIZED_MARGIN,
            "requireGain": {"resource": "fileSize", "atLeast": QUANTIZED_GAIN},
            "minSamples": min(30, items),
        }
    )
    for quantization in (q for q in QUANTS if q != ANCHOR):
        results = {}
        for suite in suites:
            run = BenchmarkRun(
                benchmark=suite.metadata.name,
                deployment=domain,
                champion=revision(ANCHOR),
                candidate=revision(quantization),
                spec=suite.spec,
                items=tuple(suite.spec.inline or ()),
            )
            results[suite.metadata.name] = result = runner.query(run)
            for name, key in ((ANCHOR, revision(ANCHOR)), (quantization, revision(quantization))):
                got, fast, failed = arm(result, key)
                # The anchor answers every pair's run alike (greedy): its scores are kept once.
                scores[name].setdefault(suite.metadata.name, got)
                speeds[name] += fast
                errors[name] += failed
        outcome = offline_outcome(rule, results, Footprint(sizes[ANCHOR], sizes[quantization]))
        verdicts[quantization] = f"{outcome.verdict} ({outcome.reason})"
    lines = []
    for quantization in QUANTS:
        per_suite = scores[quantization]
        means = {name.removeprefix(f"{domain}-"): statistics.fmean(v) for name, v in per_suite.items() if v}
        detail = ", ".join(f"{name} {value:.3f}" for name, value in means.items())
        lines.append(
            f"| {domain} | {quantization} | {sizes[quantization] / 1e6:.2f} | "
            f"{statistics.fmean(means.values()):.3f} | {detail} | "
            f"{statistics.median(speeds[quantization]):.0f} | {errors[quantization]} | "
            f"{verdicts[quantization]} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", action="append", choices=DOMAINS, help="repeatable (default: all four)")
    parser.add_argument("--items", type=int, default=64, help="items per suite (at most 64)")
    args = parser.parse_args(argv)
    domains = args.domain or list(DOMAINS)
    started = time.monotonic()
    # Scored here, through baton: the manifest's own in-process scores are not needed.
    artifacts = {(d, q): catalog.ensure(d, "v2", q, score=False) for d in domains for q in QUANTS}
    serve = LocalServe(free_port(), LocalKeys.disabled())
    serve.start()
    try:
        serve.apply(pool(artifacts, domains))
        serve.wait_for_ingress()
        wait_ready(serve, domains)
        runner = BenchmarkRunner(serve.base_url, concurrency=4, show_progress=False)
        rows = []
        for domain in domains:
            sizes = {q: artifacts[(domain, q)].size_bytes for q in QUANTS}
            rows += measure_domain(runner, domain, args.items, sizes)
    finally:
        serve.stop()
    print(
        f"| domain (v2) | quantization | MB | mean score | per suite | tok/s (median per item) | errors | "
        f"vs Q8_0: non-inferior within {QUANTIZED_MARGIN} and >= {QUANTIZED_GAIN:.0%} smaller |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\n{args.items} items per suite; measured in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
