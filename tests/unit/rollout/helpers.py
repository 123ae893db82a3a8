"""Builders for the rollout core's inputs, so each table row states only what it is about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from baton.analysis.outcome import GateOutcome
from baton.api import ModelCandidate, ModelDeployment, ModelDeploymentStatus, Verdict
from baton.api.decision import Gate
from baton.rollout import (
    Observations,
    OfflineResult,
    OnlineResult,
    ReconcileResult,
    RevisionHealth,
    reconcile,
)
from baton.rollout.model import RevisionState

NOW = datetime(2026, 11, 29, 6, 0, 0, tzinfo=UTC)
# When the tables' live samples were read unless a row says otherwise: after every pause they run.
SAMPLES_READ_AT = NOW + timedelta(hours=1)
DIGEST = "sha256:" + "a" * 64
CHAMPION = "medical-v1"
CANDIDATE = "medical-v2"


def deployment_doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "domain": "medical",
        "pool": "cpu-small",
        "model": {
            "version": "v1",
            "artifact": {"uri": "/models/v1.gguf", "digest": DIGEST, "quantization": "Q8_0"},
        },
        "rollout": {
            "steps": [
                {"weight": 10, "pause": "30s", "minRequests": 5},
                {"weight": 50, "pause": "30s", "minRequests": 5},
                {"weight": 90, "pause": "30s", "minRequests": 5},
            ]
        },
        "analysis": {"benchmarks": [{"name": "medical-qa"}]},
    }
    base.update(spec)
    return {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "medical", "namespace": "default", "generation": 1},
        "spec": base,
    }


def deployment(status: ModelDeploymentStatus | None = None, **spec: Any) -> ModelDeployment:
    resource = ModelDeployment.model_validate(deployment_doc(**spec))
    return resource.model_copy(update={"status": status})


def candidate(
    version: str = "v2",
    *,
    created: str = "2026-11-29T05:00:00Z",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
) -> ModelCandidate:
    document: dict[str, Any] = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelCandidate",
        "metadata": {
            "name": f"medical-{version}",
            "namespace": "default",
            "creationTimestamp": created,
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "deployment": "medical",
            "version": version,
            "artifact": {"uri": f"/models/{version}.gguf", "digest": DIGEST, "quantization": "Q8_0"},
        },
    }
    if status is not None:
        document["status"] = status
    return ModelCandidate.model_validate(document)


def outcome(verdict: Verdict, gate: Gate = Gate.OFFLINE, reason: str = "Reason") -> GateOutcome:
    return GateOutcome(verdict=verdict, gate=gate, reason=reason, message=f"{verdict} by test")


def healthy(*revisions: str, state: RevisionState = RevisionState.READY, message: str = "") -> dict:
    return {revision: RevisionHealth(state, message) for revision in revisions}


def observe(
    revisions: dict | None = None,
    *,
    served: dict[str, int] | None = None,
    offline: Verdict | None = None,
    benchmarks: tuple[str, ...] = ("medical-qa",),
    online: Verdict | None = None,
    step: int = 0,
    requests: int = 100,
    read_at: datetime = SAMPLES_READ_AT,
) -> Observations:
    return Observations(
        revisions=healthy(CHAMPION, CANDIDATE) if revisions is None else revisions,
        served_weights=served,
        offline=OfflineResult(CANDIDATE, benchmarks, outcome(offline)) if offline else None,
        online=(
            OnlineResult(CANDIDATE, step, requests, outcome(online, Gate.ONLINE), read_at) if online else None
        ),
    )


def advance(
    resource: ModelDeployment,
    candidates: list[ModelCandidate],
    observations: Observations,
    now: datetime = NOW,
) -> tuple[ModelDeployment, ReconcileResult]:
    """Reconcile once and return the deployment with the new status persisted.

    Persisting goes through the wire form, as with the API server: enums come back as strings.
    """
    result = reconcile(resource, candidates, observations, now)
    stored = ModelDeploymentStatus.model_validate(result.status.to_wire())
    return resource.model_copy(update={"status": stored}), result


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def actions_of(result: ReconcileResult, kind: type) -> list:
    return [action for action in result.actions if isinstance(action, kind)]


def in_phase(phase: str, **spec: Any) -> ModelDeployment:
    """A deployment driven from nothing to `phase` through the machine itself (never hand-built status)."""
    resource = deployment(**spec)
    offer = [candidate()]
    route: list[tuple[Observations, datetime]] = [
        (observe(healthy(CHAMPION)), NOW),  # declare the champion
        (observe(healthy(CHAMPION)), NOW),  # champion ready -> Serving
        (observe(healthy(CHAMPION)), NOW),  # candidate offered -> Benchmarking
        (observe(offline=Verdict.PROMOTE), NOW),  # -> Canary step 0
    ]
    for observations, now in route:
        if resource.status is not None and resource.status.phase == phase:
            return resource
        resource, _ = advance(resource, offer, observations, now)
    assert resource.status is not None and resource.status.phase == phase, resource.status
    return resource
