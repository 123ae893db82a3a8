"""The names of the pure core (and of the metric providers) that the evidence layer uses, in one place.

The shells never import `baton.analysis` for evidence: they go through this layer, and this layer
goes through this module, so a move in the core is re-pointed here alone.
"""

from __future__ import annotations

from baton.analysis.decision import decide
from baton.analysis.gain import Footprint
from baton.analysis.gates import ArmSamples, benchmark_scores, offline_outcome, online_outcome
from baton.analysis.measurements import ArmReadings, BenchmarkResult, BenchmarkRun, Measurement
from baton.analysis.online import ArmStats, counter_increase
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import evaluation_failed
from baton.analysis.scorers import compile_scorer
from baton.evidence.providers import MetricProvider
from baton.evidence.providers.benchmark import BenchmarkRunner
from baton.evidence.providers.prometheus import InstantQuery, PrometheusProvider, render_query

__all__ = [
    "ArmReadings",
    "ArmSamples",
    "ArmStats",
    "BenchmarkResult",
    "BenchmarkRun",
    "BenchmarkRunner",
    "Footprint",
    "GateOutcome",
    "InstantQuery",
    "Measurement",
    "MetricProvider",
    "PrometheusProvider",
    "benchmark_scores",
    "compile_scorer",
    "counter_increase",
    "decide",
    "evaluation_failed",
    "offline_outcome",
    "online_outcome",
    "render_query",
]
