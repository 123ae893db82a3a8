"""Canary analysis: the statistics and verdicts that decide whether a candidate replaces a champion.

Pure functions of data (no network, no clock), shared by the Kubernetes operator and the local
shell. The public surface:

- `offline_gate(PairedScores, OfflinePolicy)`: paired benchmark comparison (McNemar, paired t,
  Wilcoxon, bootstrap, cluster-robust t) behind sanity checks; `offline.compare` for the raw test.
- `SequentialTest`, `SequentialState`, `update`, `assess`: the anytime-valid online canary test.
- `threshold_gate`, `check_evaluation`, `check_measurement`, `evaluation_failed`: SLO and sanity gates.
- `baton.analysis.gates`: which of these tests each field of a deployment's `spec.analysis` asks for.
- `baton.analysis.decision`: `decide([...])` combines gate outcomes fail-closed; `step_verdict`,
  `rollout_verdict`, `bake_verdict` are the decisions the rollout state machine acts on.
- `compile_scorer(Scorer)`: per-item scoring of benchmark answers.
- `baton.analysis.measurements`: what the shells measured (readings, benchmark results), as values.
- Nothing here does I/O: the metric providers (Prometheus, the benchmark runner) are part of the
  evidence layer (`baton.evidence.providers`), which measures and hands these functions values.
"""

from baton.analysis.decision import decide
from baton.analysis.measurements import Measurement, PairedScores
from baton.analysis.offline import OfflinePolicy, PairedComparison, PairedTest, compare, offline_gate
from baton.analysis.online import ArmStats, MetricKind, SequentialState, SequentialTest, assess, update
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import (
    SanityLimits,
    check_evaluation,
    check_measurement,
    evaluation_failed,
    threshold_gate,
)
from baton.analysis.scorers import compile_scorer, score

__all__ = [
    "ArmStats",
    "GateOutcome",
    "Measurement",
    "MetricKind",
    "OfflinePolicy",
    "PairedComparison",
    "PairedScores",
    "PairedTest",
    "SanityLimits",
    "SequentialState",
    "SequentialTest",
    "assess",
    "check_evaluation",
    "check_measurement",
    "compare",
    "compile_scorer",
    "decide",
    "evaluation_failed",
    "offline_gate",
    "score",
    "threshold_gate",
    "update",
]
