"""Decision quality of the rule that ships: simulated rollouts with known truth, through `reconcile`.

Every simulated candidate goes through `baton.rollout.reconcile` (the state machine both shells
drive), with its offline gate judged by `baton.analysis.gates.offline_outcome` on simulated paired
benchmark answers and its canary judged by `baton.analysis.gates.online_outcome` on simulated live
traffic, sampled at the shells' cadence (`baton.rollout.next_sample_delay`: every 2 s, and right
after each pause). Nothing here re-implements a test or a stopping rule. The offline paired tests,
which have no stopping rule, are also checked on their own (power, false promotion, coverage,
clustered items). One command, seeded:

    python bench/decision_quality.py            # full run (about two minutes on one core)
    python bench/decision_quality.py --quick    # smaller, for a smoke check

The scenarios and their parameters are spelled out in docs/statistics.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from baton.analysis.gain import Footprint
from baton.analysis.gates import ArmSamples, offline_outcome, online_outcome
from baton.analysis.measurements import BenchmarkResult, BenchmarkRun, ItemResult
from baton.analysis.offline import PairedTest, compare
from baton.api import ModelCandidate, ModelDeployment, Phase, Verdict
from baton.api.benchmark import BenchmarkItem, BenchmarkSpec
from baton.api.deployment import AnalysisSpec
from baton.rollout import (
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RevisionHealth,
    RevisionState,
    RunBenchmark,
    next_sample_delay,
    parse_time,
    reconcile,
)

START = datetime(2026, 12, 1, tzinfo=UTC)
CHAMPION, CANDIDATE = "medical-v1", "medical-v2"
DIGEST = "sha256:" + "a" * 64
FINAL = frozenset({Phase.PROMOTED, Phase.REJECTED, Phase.INCONCLUSIVE, Phase.ROLLED_BACK, Phase.FAILED})
# The shipped example's canary (manifests/examples/medical.yaml) with a guardrail on the error rate.
STEPS = [
    {"weight": 10, "pause": "30s", "minRequests": 50},
    {"weight": 50, "pause": "30s", "minRequests": 100},
]
BENCHMARK_ITEMS = 1000
# Benchmark answers: champion accuracy 70 %, 10 % of items answered differently by the two versions.
ACCURACY, DISCORDANCE = 0.70, 0.10
BASE_ERROR_RATE = 0.01
REGRESSION = 0.03


@dataclass(frozen=True)
class Scale:
    """How many simulated rollouts each scenario runs, and the sizes of the offline-test checks."""

    rollouts: int
    offline_trials: int
    coverage_trials: int
    cluster_trials: int
    bootstrap_resamples: int


FULL = Scale(
    rollouts=400, offline_trials=2000, coverage_trials=10000, cluster_trials=1000, bootstrap_resamples=1000
)
QUICK = Scale(
    rollouts=25, offline_trials=300, coverage_trials=600, cluster_trials=100, bootstrap_resamples=300
)
ALPHA = 0.05
NI_MARGIN = 0.02


@dataclass(frozen=True)
class Scenario:
    """One simulated population of rollouts: what is true, how much traffic, which gates."""

    name: str
    offline_effect: float  # candidate minus champion benchmark accuracy
    candidate_error_rate: float
    requests_per_s: float
    benchmarks: bool = True
    min_samples: int = 30


@dataclass(frozen=True)
class Outcome:
    phase: Phase
    reason: str
    canary: bool  # the candidate passed the offline gate and reached live traffic
    candidate_samples: int  # live candidate requests judged until the decision


def deployment(scenario: Scenario) -> ModelDeployment:
    analysis = {
        "benchmarks": [{"name": "medical-qa"}] if scenario.benchmarks else [],
        "minSamples": scenario.min_samples,
        "metrics": [{"name": "error-rate", "kind": "errorRate"}],
    }
    return ModelDeployment.model_validate(
        {
            "metadata": {"name": "medical", "namespace": "default", "generation": 1},
            "spec": {
                "domain": "medical",
                "pool": "cpu-small",
                "model": {
                    "version": "v1",
                    "artifact": {"uri": "/m/v1.gguf", "digest": DIGEST, "quantization": "Q8_0"},
                },
                "rollout": {"steps": STEPS},
                "analysis": analysis,
            },
        }
    )


CANDIDATES = [
    ModelCandidate.model_validate(
        {
            "metadata": {"name": "medical-v2", "namespace": "default"},
            "spec": {
                "deployment": "medical",
                "version": "v2",
                "artifact": {"uri": "/m/v2.gguf", "digest": DIGEST, "quantization": "Q8_0"},
            },
        }
    )
]
ITEMS = tuple(BenchmarkItem(id=f"q{index}", prompt="q", expected="a") for index in range(BENCHMARK_ITEMS))
RUN = BenchmarkRun(
    "medical-qa",
    "medical",
    CHAMPION,
    CANDIDATE,
    BenchmarkSpec(domain="medical", inline=list(ITEMS[:1]), scorer={"type": "exact"}),
    ITEMS,
)


def benchmark(rng: np.random.Generator, effect: float) -> BenchmarkResult:
    """Paired pass/fail answers of both versions on the same items."""
    champion_only, candidate_only = (DISCORDANCE - effect) / 2, (DISCORDANCE + effect) / 2
    both = ACCURACY - champion_only
    cells = rng.choice(
        4, size=BENCHMARK_ITEMS, p=[both, champion_only, candidate_only, 1 - both - DISCORDANCE]
    )
    results = []
    for item, cell in zip(ITEMS, cells, strict=True):
        results.append(ItemResult(item.id, CHAMPION, float(cell in (0, 1)), None, 0.0))
        results.append(ItemResult(item.id, CANDIDATE, float(cell in (0, 2)), None, 0.0))
    return BenchmarkResult(RUN, tuple(results))


def simulate(rng: np.random.Generator, scenario: Scenario) -> Outcome:
    """One rollout from a serving champion to a resting phase, as a shell would drive it."""
    resource = deployment(scenario)
    ready = {CHAMPION: RevisionHealth(RevisionState.READY), CANDIDATE: RevisionHealth(RevisionState.READY)}
    now, offline, online = START, None, None
    window: dict[int, tuple[ArmSamples, ArmSamples]] = {}
    previous_read: datetime | None = None
    arrivals_until = START
    while now < START + timedelta(hours=2):
        result = reconcile(resource, CANDIDATES, Observations(ready, None, offline, online), now)
        resource = resource.model_copy(update={"status": result.status})
        status = result.status
        if status.history and status.candidate is None and status.phase in FINAL:
            judged = sum(arms[1].requests for arms in window.values())
            return Outcome(status.phase, status.history[0].reason, bool(window), judged)
        run_benchmark = next((action for action in result.actions if isinstance(action, RunBenchmark)), None)
        if run_benchmark is not None and offline is None:
            # The shell runs the benchmark and reconciles again once it finished.
            outcome = offline_outcome(
                resource.spec.analysis, {"medical-qa": benchmark(rng, scenario.offline_effect)}
            )
            offline = OfflineResult(CANDIDATE, run_benchmark.benchmarks, outcome)
            continue
        if result.requeue_after == 0:
            continue
        observe = next((action for action in result.actions if isinstance(action, ObserveCanary)), None)
        if observe is None:
            now += timedelta(seconds=result.requeue_after or 1.0)
            continue
        # The shell's sample: the step's traffic up to now, then the next look at the core's cadence.
        arrivals = rng.poisson(scenario.requests_per_s * (now - arrivals_until).total_seconds())
        arrivals_until = now
        weight = status.canary_weight / 100
        to_candidate = rng.binomial(arrivals, weight)
        champion, candidate = window.get(observe.step, (ArmSamples(), ArmSamples()))
        champion = ArmSamples(
            requests=champion.requests + arrivals - to_candidate,
            errors=champion.errors + rng.binomial(arrivals - to_candidate, BASE_ERROR_RATE),
        )
        candidate = ArmSamples(
            requests=candidate.requests + to_candidate,
            errors=candidate.errors + rng.binomial(to_candidate, scenario.candidate_error_rate),
        )
        window[observe.step] = (champion, candidate)
        outcome = online_outcome(resource.spec.analysis, champion, candidate)
        online = OnlineResult(CANDIDATE, observe.step, candidate.requests, outcome, now)
        delay = next_sample_delay(previous_read, now, now, parse_time(observe.until))
        previous_read = now
        now += timedelta(seconds=delay)
    raise RuntimeError(f"{scenario.name}: no decision after two simulated hours")


@dataclass(frozen=True)
class Row:
    goal: str
    target: str
    measured: str
    met: bool | None


def share(outcomes: list[Outcome], *phases: Phase) -> float:
    return float(np.mean([outcome.phase in phases for outcome in outcomes])) if outcomes else float("nan")


def rollout_rows(rng: np.random.Generator, rollouts: int) -> list[Row]:
    busy, quiet = 20.0, 0.5  # requests per second to the deployment
    boundary = BASE_ERROR_RATE + 0.02  # exactly the error-rate guardrail's tolerance
    scenarios = {
        "aa": Scenario("A/A", 0.0, BASE_ERROR_RATE, busy),
        "aa-online": Scenario("A/A, guardrail only", 0.0, BASE_ERROR_RATE, busy, benchmarks=False),
        "boundary": Scenario("2 points worse, guardrail only", 0.0, boundary, busy, benchmarks=False),
        "better": Scenario("better", 0.03, BASE_ERROR_RATE, busy),
        "regression": Scenario(
            "better offline, 3 points more errors", 0.03, BASE_ERROR_RATE + REGRESSION, busy
        ),
        "quiet": Scenario("better, little traffic", 0.03, BASE_ERROR_RATE, quiet),
    }
    runs = {key: [simulate(rng, scenario) for _ in range(rollouts)] for key, scenario in scenarios.items()}
    live = {key: [outcome for outcome in outcomes if outcome.canary] for key, outcomes in runs.items()}
    aa, aa_online, boundary_runs = runs["aa"], runs["aa-online"], runs["boundary"]
    regression, better, quiet_runs = live["regression"], live["better"], live["quiet"]
    rolled_back = [outcome.candidate_samples for outcome in regression if outcome.phase == Phase.ROLLED_BACK]
    promoted = [outcome.candidate_samples for outcome in better if outcome.phase == Phase.PROMOTED]
    return [
        Row(
            f"A/A false promotion: identical versions, benchmark + error-rate guardrail, {busy:g} req/s, "
            f"canary looked at every 2 s ({rollouts} rollouts)",
            "<= 5 %",
            f"{share(aa, Phase.PROMOTED):.1%}",
            share(aa, Phase.PROMOTED) <= 0.05,
        ),
        Row(
            "  false promotion at the guardrail's tolerance: candidate 2 points worse, guardrail only",
            "<= 5 %",
            f"{share(boundary_runs, Phase.PROMOTED):.1%}",
            share(boundary_runs, Phase.PROMOTED) <= 0.05,
        ),
        Row(
            "  A/A, guardrail only: falsely rolled back / promoted (a guardrail shows 'not worse', "
            "not 'better')",
            "rolled back <= 5 %",
            f"{share(aa_online, Phase.ROLLED_BACK):.1%} / {share(aa_online, Phase.PROMOTED):.1%}",
            share(aa_online, Phase.ROLLED_BACK) <= 0.05,
        ),
        Row(
            f"power at a 3-point error-rate regression ({BASE_ERROR_RATE:.0%} -> "
            f"{BASE_ERROR_RATE + REGRESSION:.0%}) that passed the benchmark: rolled back / promoted",
            ">= 80 % / <= 5 %",
            f"{share(regression, Phase.ROLLED_BACK):.1%} / {share(regression, Phase.PROMOTED):.1%}",
            share(regression, Phase.ROLLED_BACK) >= 0.8 and share(regression, Phase.PROMOTED) <= 0.05,
        ),
        Row(
            "median candidate samples to a decision: that regression rolled back / a better candidate "
            "promoted",
            "(reported)",
            f"{np.median(rolled_back) if rolled_back else float('nan'):.0f} / "
            f"{np.median(promoted) if promoted else float('nan'):.0f}",
            None,
        ),
        Row(
            "  a better candidate (+3 points on the benchmark, same live errors): promoted",
            "(reported)",
            f"{share(runs['better'], Phase.PROMOTED):.1%}",
            None,
        ),
        Row(
            f"canaries ending Inconclusive for lack of traffic ({quiet:g} req/s, better candidate)",
            "(reported)",
            f"{share(quiet_runs, Phase.INCONCLUSIVE):.1%} (promoted {share(quiet_runs, Phase.PROMOTED):.1%})",
            None,
        ),
    ]


def paired_outcomes(
    rng: np.random.Generator, n: int, accuracy: float, effect: float, discordance: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pass/fail of champion and candidate on the same n items, with a given share of items that disagree."""
    champion_only = (discordance - effect) / 2
    candidate_only = (discordance + effect) / 2
    both = accuracy - champion_only
    cells = rng.choice(
        4, size=n, p=[both, champion_only, candidate_only, 1 - both - champion_only - candidate_only]
    )
    champion = np.isin(cells, (0, 1)).astype(float)
    candidate = np.isin(cells, (0, 2)).astype(float)
    return champion, candidate


def offline_rows(rng: np.random.Generator, scale: Scale) -> list[Row]:
    rows = []
    for n, discordance in ((1000, 0.10), (1000, 0.15), (500, 0.10)):
        caught = 0
        for _ in range(scale.offline_trials):
            champion, candidate = paired_outcomes(rng, n, 0.70, -0.03, discordance)
            caught += compare(champion, candidate, alpha=ALPHA).candidate_significantly_worse
        power = caught / scale.offline_trials
        primary = n == 1000 and discordance == 0.10
        rows.append(
            Row(
                f"{'' if primary else '  '}power to flag a 3-point regression (70 % -> 67 %), exact McNemar, "
                f"{n} items, {discordance:.0%} of items disagree",
                ">= 80 %" if primary else "(reported)",
                f"{power:.1%}",
                bool(power >= 0.80) if primary else None,
            )
        )
    null_promotions = boundary_promotions = 0
    for _ in range(scale.offline_trials):
        champion, candidate = paired_outcomes(rng, 1000, 0.70, 0.0, 0.10)
        null_promotions += compare(champion, candidate, alpha=ALPHA).candidate_not_worse_than_margin
        champion, candidate = paired_outcomes(rng, 1000, 0.70, -NI_MARGIN, 0.10)
        boundary = compare(champion, candidate, alpha=ALPHA, margin=NI_MARGIN)
        boundary_promotions += boundary.candidate_not_worse_than_margin
    # Both promote only past a two-sided 95 % bound: 2.5 % nominal, exactly that at the margin boundary.
    allowed = 0.025 + 3 * math.sqrt(0.025 * 0.975 / scale.offline_trials)
    for label, promotions in (
        ("identical models (superiority, 1000 items)", null_promotions),
        (f"candidate worse by exactly the margin {NI_MARGIN} (non-inferiority)", boundary_promotions),
    ):
        rate = promotions / scale.offline_trials
        rows.append(
            Row(
                f"offline false promotion, {label}",
                f"2.5 % (<= {allowed:.1%} with MC error)",
                f"{rate:.1%}",
                rate <= allowed,
            )
        )
    covered = 0
    for _ in range(scale.coverage_trials):
        champion, candidate = paired_outcomes(rng, 1000, 0.70, 0.02, 0.15)
        result = compare(champion, candidate, alpha=ALPHA, test=PairedTest.PAIRED_T)
        covered += result.ci_low <= 0.02 <= result.ci_high
    coverage = covered / scale.coverage_trials
    rows.append(
        Row(
            f"95 % interval coverage, paired items ({scale.coverage_trials} trials, 1000 items)",
            "94-96 %",
            f"{coverage:.1%}",
            bool(0.94 <= coverage <= 0.96),
        )
    )
    return rows


# A cheaper quantization of the champion's own weights: Q8_0 -> Q4_K_M of the 3.3 M-parameter models
# (docs/models.md), a 30 % saving required. A re-quantization answers most items as its source does:
# 5 % of items disagree at no loss, plus one more item in a hundred per point of accuracy lost.
QUANT_BYTES = (3_500_000, 2_000_000)
QUANT_DISCORDANCE = 0.05


def quantization_rows(rng: np.random.Generator, scale: Scale) -> list[Row]:
    """The non-inferiority rule with `requireGain`, through `offline_outcome`, on paired answers."""
    rows = []
    footprint = Footprint(*QUANT_BYTES)
    # Each trial is a whole offline_outcome on 1000 items: a quarter of the paired-test trials keeps
    # the full run near its two minutes, with about 1 point of Monte Carlo error at 5 %.
    trials = max(1, scale.offline_trials // 4)
    for margin in (NI_MARGIN, 0.05):
        analysis = AnalysisSpec.model_validate(
            {
                "benchmarks": [{"name": "medical-qa"}],
                "mode": "nonInferiority",
                "margin": margin,
                "requireGain": {"resource": "fileSize", "atLeast": 0.3},
            }
        )
        accepted = {}
        for label, effect in (("worse", -2 * margin), ("within", -margin / 2)):
            promoted = 0
            for _ in range(trials):
                champion, candidate = paired_outcomes(
                    rng, BENCHMARK_ITEMS, 0.70, effect, QUANT_DISCORDANCE - effect
                )
                results = tuple(
                    result
                    for item, first, second in zip(ITEMS, champion, candidate, strict=True)
                    for result in (
                        ItemResult(item.id, CHAMPION, float(first), None, 0.0),
                        ItemResult(item.id, CANDIDATE, float(second), None, 0.0),
                    )
                )
                outcome = offline_outcome(analysis, {"medical-qa": BenchmarkResult(RUN, results)}, footprint)
                promoted += outcome.verdict == Verdict.PROMOTE
            accepted[label] = promoted / trials
        rows.append(
            Row(
                f"quantization false acceptance, truly worse by 2 x margin ({2 * margin:.2f}), "
                f"margin {margin}, {BENCHMARK_ITEMS} items, {QUANT_DISCORDANCE + 2 * margin:.0%} disagree",
                "<= 5 %",
                f"{accepted['worse']:.1%}",
                accepted["worse"] <= 0.05,
            )
        )
        rows.append(
            Row(
                f"  power to accept one worse by margin / 2 ({margin / 2:.3f}), margin {margin}",
                "(reported)",
                f"{accepted['within']:.1%}",
                None,
            )
        )
    return rows


def cluster_rows(rng: np.random.Generator, scale: Scale) -> list[Row]:
    """A/A on grouped items: 50 source documents x 8 items, within-cluster correlation 0.7."""
    n_clusters, cluster_size, icc = 50, 8, 0.7
    groups = [f"doc-{index // cluster_size}" for index in range(n_clusters * cluster_size)]
    robust_rejections = naive_rejections = robust_covered = 0
    for trial in range(scale.cluster_trials):
        shared = rng.normal(0, math.sqrt(icc), n_clusters).repeat(cluster_size)
        difference = shared + rng.normal(0, math.sqrt(1 - icc), n_clusters * cluster_size)
        champion = np.zeros_like(difference)
        robust = compare(champion, difference, groups=groups, alpha=ALPHA)
        naive = compare(
            champion,
            difference,
            alpha=ALPHA,
            test=PairedTest.PAIRED_BOOTSTRAP,
            n_resamples=scale.bootstrap_resamples,
            seed=trial,
        )
        robust_rejections += robust.p_value < ALPHA
        naive_rejections += naive.p_value < ALPHA
        robust_covered += robust.ci_low <= 0 <= robust.ci_high
    robust_rate = robust_rejections / scale.cluster_trials
    return [
        Row(
            f"clustered A/A (ICC {icc}, {n_clusters}x{cluster_size} items): "
            "false rejection, cluster-robust t",
            "<= 6 %",
            f"{robust_rate:.1%}",
            bool(robust_rate <= 0.06),
        ),
        Row(
            "  same data, naive item bootstrap: false rejection",
            "(for contrast)",
            f"{naive_rejections / scale.cluster_trials:.1%}",
            None,
        ),
        Row(
            "  cluster-robust 95 % interval coverage",
            "(reported)",
            f"{robust_covered / scale.cluster_trials:.1%}",
            None,
        ),
    ]


def run(scale: Scale, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    return (
        rollout_rows(rng, scale.rollouts)
        + offline_rows(rng, scale)
        + quantization_rows(rng, scale)
        + cluster_rows(rng, scale)
    )


def format_table(rows: list[Row]) -> str:
    lines = ["| goal | target | measured | met |", "|---|---|---|---|"]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "NO")
        lines.append(f"| {row.goal} | {row.target} | {row.measured} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer simulated rollouts (a smoke check)")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    started = time.monotonic()
    scale = QUICK if args.quick else FULL
    rows = run(scale, args.seed)
    print(format_table(rows))
    print(f"\nseed {args.seed}, {scale.rollouts} rollouts per scenario, {time.monotonic() - started:.0f} s")
    return 0 if all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
