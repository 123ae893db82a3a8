"""baton's API: pydantic types that are the CRD schemas (group `baton.dev`, version `v1alpha1`).

Both shells validate resources with these types: the operator reads them from the API server,
the local mode from YAML files. `baton crds` turns them into CustomResourceDefinitions.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from baton.api.benchmark import Benchmark, BenchmarkItem, BenchmarkSpec, Scorer, ScorerType
from baton.api.candidate import ModelCandidate, ModelCandidateSpec, ModelSource, ModelSourceSpec
from baton.api.common import API_VERSION, GROUP, VERSION, Artifact, Condition, Quantization, Resource
from baton.api.decision import Decision, Evidence, Gate, Verdict
from baton.api.deployment import (
    AnalysisSpec,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    RevisionStatus,
    RolloutStrategy,
)
from baton.api.pool import ModelPool, ModelPoolSpec
from baton.api.tuning import ModelTuning, ModelTuningSpec, ModelTuningStatus, TuningPhase

KINDS: dict[str, type[Resource]] = {
    cls.kind_name: cls
    for cls in (ModelPool, ModelDeployment, ModelCandidate, ModelSource, Benchmark, ModelTuning)
}


class UnknownKindError(ValueError):
    """A document is not one of baton's kinds."""


def parse_resource(document: dict[str, Any]) -> Resource:
    """Validate one document (from YAML or the API server) into its baton type, as the API server would.

    The document is validated as the JSON the API server receives, strictly and by its camelCase
    names only: pydantic's lax mode would take `replicas: "2"`, `critical: "yes"` or a snake_case
    key, which the API server refuses, and a laptop must not run what a cluster refuses. Raises
    `UnknownKindError` for foreign kinds and pydantic's `ValidationError` for invalid ones (its
    field paths in the API server's notation: `baton.api.common.api_field_path`).
    """
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if api_version != API_VERSION or kind not in KINDS:
        raise UnknownKindError(f"not a baton resource: apiVersion={api_version!r} kind={kind!r}")
    # `default=str`: a YAML timestamp (`2026-01-01`) reaches the API server as the string kubectl sends.
    wire = json.dumps(_whole_numbers_as_integers(document), default=str)
    return KINDS[kind].model_validate_json(wire, strict=True, by_alias=True, by_name=False)


def _whole_numbers_as_integers(value: Any) -> Any:
    """`2.0` as `2`, as the API server's JSON decoder reads it: `replicas: 2.0` is a valid integer there."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _whole_numbers_as_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_integers(item) for item in value]
    return value


__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "AnalysisSpec",
    "Artifact",
    "Benchmark",
    "BenchmarkItem",
    "BenchmarkSpec",
    "Condition",
    "Decision",
    "Evidence",
    "Gate",
    "ModelCandidate",
    "ModelCandidateSpec",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelPool",
    "ModelPoolSpec",
    "ModelSource",
    "ModelSourceSpec",
    "ModelTuning",
    "ModelTuningSpec",
    "ModelTuningStatus",
    "Phase",
    "Quantization",
    "Resource",
    "RevisionStatus",
    "RolloutStrategy",
    "Scorer",
    "ScorerType",
    "TuningPhase",
    "UnknownKindError",
    "ValidationError",
    "Verdict",
    "parse_resource",
]
