"""Rollout metrics follow the statuses they are fed: one-hot phase, weight, decisions counted once."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from baton.api import ModelCandidate, ModelDeploymentStatus
from baton.observability.rollout_metrics import RolloutMetrics

pytestmark = pytest.mark.unit


def decision(verdict: str, candidate: str, time: str, reason: str = "BenchmarkInferior") -> dict[str, Any]:
    return {"verdict": verdict, "gate": "offline", "candidate": candidate, "reason": reason, "time": time}


def status(phase: str, weight: int = 0, history: list[dict[str, Any]] | None = None) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(
        {"phase": phase, "canaryWeight": weight, "history": history or []}
    )


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def metrics() -> RolloutMetrics:
    return RolloutMetrics(CollectorRegistry())


def test_phase_is_one_hot_and_weight_follows_status(metrics: RolloutMetrics) -> None:
    metrics.observe_deployment("ml", "medical", status("Canary", weight=10))
    metrics.observe_deployment("ml", "medical", status("Canary", weight=50))
    reg = metrics.registry
    assert value(reg, "baton_rollout_phase", namespace="ml", deployment="medical", phase="Canary") == 1
    assert value(reg, "baton_rollout_phase", namespace="ml", deployment="medical", phase="Serving") == 0
    assert value(reg, "baton_rollout_canary_weight", namespace="ml", deployment="medical") == 50


def test_new_decisions_are_counted_once_and_history_found_at_start_is_not(metrics: RolloutMetrics) -> None:
    old = decision("Reject", "v2", "2026-01-01T00:00:00Z")
    metrics.observe_deployment("ml", "medical", status("Rejected", history=[old]))
    labels = {"namespace": "ml", "deployment": "medical", "verdict": "Reject", "gate": "offline"}
    # Every series exists from the start at 0, so Prometheus' increase() sees the first decision.
    assert value(metrics.registry, "baton_rollout_decisions_total", **labels) == 0
    assert value(metrics.registry, "baton_rollout_decisions_total", **labels | {"verdict": "Promote"}) == 0

    new = decision("Reject", "v3", "2026-01-02T00:00:00Z")
    metrics.observe_deployment("ml", "medical", status("Rejected", history=[new, old]))
    metrics.observe_deployment("ml", "medical", status("Rejected", history=[new, old]))
    assert value(metrics.registry, "baton_rollout_decisions_total", **labels) == 1


def test_benchmark_scores_of_both_arms(metrics: RolloutMetrics) -> None:
    candidate = ModelCandidate.model_validate(
        {
            "metadata": {"name": "medical-v2"},
            "spec": {
                "deployment": "medical",
                "version": "v2",
                "artifact": {"uri": "file:///m.gguf", "digest": "sha256:" + "0" * 64, "quantization": "Q8_0"},
            },
            "status": {
                "phase": "Canary",
                "scores": [{"benchmark": "extraction", "items": 40, "champion": 0.5, "candidate": 0.75}],
            },
        }
    )
    metrics.observe_candidate("ml", candidate)
    labels = {"namespace": "ml", "deployment": "medical", "candidate": "v2", "benchmark": "extraction"}
    assert value(metrics.registry, "baton_benchmark_score", arm="champion", **labels) == 0.5
    assert value(metrics.registry, "baton_benchmark_score", arm="candidate", **labels) == 0.75
