"""Canary analysis: the statistics and verdicts that decide whether a candidate replaces a champion.

Pure functions of data (no network, no clock), shared by the Kubernetes operator and the local
shell. The public surface:

- `offline_gate(PairedScores, OfflinePolicy)`: paired benchmark comparison (McNemar, paired t,
  Wilcoxon, bootstrap, cluster-robust t) behind sanity checks; `offline.compare` for the raw test.
- `SequentialTest`, `SequentialState`, `update`, `assess`: the anytime-valid online canary test.
- `threshold_gate`, `check_evaluation`, `check_measurement`, `evaluation_failed`: SLO and sanity gates.
- `decide([...])`: one fail-closed verdict with the evidence of every gate.
- `compile_scorer(Scorer)`: per-item scoring of benchmark answers.
- Metric providers live in `baton.analysis.providers` (Prometheus, in-process, benchmark runner).
"""

from baton.analysis.offline import PairedComparison, PairedTest, compare
from baton.analysis.online import ArmStats, MetricKind, SequentialState, SequentialTest, assess, update
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import SanityLimits, check_evaluation, check_measurement, evaluation_failed
from baton.analysis.scorers import compile_scorer, score
from baton.analysis.verdict import OfflinePolicy, PairedScores, decide, offline_gate, threshold_gate

__all__ = [
    "ArmStats",
    "GateOutcome",
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
