"""The Argo CD health check, run by Lua 5.1 (the dialect of Argo CD's gopher-lua) on sample statuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from baton.api import KINDS
from baton.k8s.pools import PODS_STARTING
from baton.observability.argocd import health_keys

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
HEALTH_LUA = REPO / "manifests" / "gitops" / "argocd" / "health.lua"
CM_PATCH = REPO / "manifests" / "gitops" / "argocd" / "argocd-cm-patch.yaml"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def health(obj: dict[str, Any]) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = dict(lua.execute(HEALTH_LUA.read_text()))
    assert result["status"] in ARGO_STATUSES
    return result


def condition(type_: str, status: str, message: str = "", reason: str = "Reason") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }


def deployment(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "medical", "generation": generation},
        "spec": {"domain": "medical"},
    }
    if status is not None:
        obj["status"] = status
    return obj


def candidate(phase: str, message: str = "") -> dict[str, Any]:
    return {
        "kind": "ModelCandidate",
        "metadata": {"name": "medical-v2", "generation": 1},
        "status": {"observedGeneration": 1, "phase": phase, "message": message},
    }


def test_no_status_yet_is_progressing() -> None:
    assert health(deployment(None)) == {
        "status": "Progressing",
        "message": "Waiting for the baton operator to report status",
    }


def test_status_of_an_older_generation_is_progressing() -> None:
    result = health(deployment({"observedGeneration": 2, "conditions": [condition("Ready", "True")]}))
    assert result == {
        "status": "Progressing",
        "message": "Waiting for the baton operator to observe generation 3",
    }


def test_ready_deployment_in_canary_is_healthy_and_says_where_the_rollout_stands() -> None:
    status = {
        "observedGeneration": 3,
        "phase": "Canary",
        "champion": {"version": "v1"},
        "candidate": {"version": "v2"},
        "canaryWeight": 10,
        "conditions": [condition("Ready", "True"), condition("Progressing", "True")],
    }
    assert health(deployment(status)) == {
        "status": "Healthy",
        "message": "champion v1, phase Canary, candidate v2 at 10%",
    }


def test_degraded_condition_wins_over_ready() -> None:
    status = {
        "observedGeneration": 3,
        "phase": "Serving",
        "conditions": [
            condition("Ready", "True"),
            condition("Degraded", "True", "champion artifact digest mismatch"),
        ],
    }
    assert health(deployment(status)) == {
        "status": "Degraded",
        "message": "champion artifact digest mismatch",
    }


def test_failed_deployment_is_degraded() -> None:
    result = health(deployment({"observedGeneration": 3, "phase": "Failed", "conditions": []}))
    assert result["status"] == "Degraded"
    assert "phase Failed" in result["message"]


def test_a_loading_champion_is_progressing_a_failed_or_unplaceable_one_degraded() -> None:
    # What the rollout core writes for a new deployment whose champion is starting (phase Pending).
    loading = [
        condition("Ready", "False", "the champion revision is starting", reason="ChampionLoading"),
        condition("Progressing", "False", reason="NoRollout"),
        condition("Degraded", "False", reason="AsExpected"),
    ]
    assert health(deployment({"observedGeneration": 3, "phase": "Pending", "conditions": loading})) == {
        "status": "Progressing",
        "message": "the champion revision is starting",
    }
    full = [condition("Ready", "False", "needs 9Gi, has 8Gi", reason="Unschedulable")]
    assert health(deployment({"observedGeneration": 3, "conditions": full})) == {
        "status": "Degraded",
        "message": "needs 9Gi, has 8Gi",
    }
    refused = [condition("Ready", "False", reason="ChampionFailed")]
    assert health(deployment({"observedGeneration": 3, "conditions": refused}))["status"] == "Degraded"


def test_pool_that_cannot_fit_its_models_is_degraded() -> None:
    pool = {
        "kind": "ModelPool",
        "metadata": {"name": "cpu-small", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                condition("Ready", "True"),
                condition("Unschedulable", "True", "needs 9Gi, has 8Gi"),
            ],
        },
    }
    assert health(pool) == {"status": "Degraded", "message": "needs 9Gi, has 8Gi"}


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Pending", "Progressing"),
        ("Benchmarking", "Progressing"),
        ("Canary", "Progressing"),
        ("Promoting", "Progressing"),
        ("RollingBack", "Progressing"),
        ("Promoted", "Healthy"),
        ("Rejected", "Degraded"),
        ("RolledBack", "Degraded"),
        ("Failed", "Degraded"),
        ("Inconclusive", "Suspended"),
    ],
)
def test_candidate_health_follows_its_phase(phase: str, expected: str) -> None:
    assert health(candidate(phase, f"why {phase}")) == {"status": expected, "message": f"why {phase}"}


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("Pending", "Progressing"),
        ("Running", "Progressing"),
        ("Succeeded", "Healthy"),
        ("Failed", "Degraded"),
    ],
)
def test_tuning_health_follows_its_phase(phase: str, expected: str) -> None:
    tuning = {
        "kind": "ModelTuning",
        "metadata": {"name": "medical-tuning", "generation": 1},
        "status": {"observedGeneration": 1, "phase": phase, "message": f"why {phase}"},
    }
    assert health(tuning) == {"status": expected, "message": f"why {phase}"}
    del tuning["status"]["message"]
    assert health(tuning)["message"] == f"Tuning {phase}"


def test_candidate_without_message_names_its_phase() -> None:
    assert health(candidate("Rejected"))["message"] == "Candidate Rejected"


def test_source_that_cannot_poll_is_degraded_pool_starting_is_progressing() -> None:
    source = {
        "kind": "ModelSource",
        "metadata": {"name": "medical-releases", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [condition("Ready", "False", "404", reason="PollFailed")],
        },
    }
    assert health(source) == {"status": "Degraded", "message": "404"}
    pool = {
        "kind": "ModelPool",
        "metadata": {"name": "cpu-small", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [
                condition(
                    "Ready", "False", "RayService serviceStatus=unknown", reason="RayServiceNotRunning"
                ),
                condition("Unschedulable", "False", reason="AllRevisionsFit"),
            ],
        },
    }
    assert health(pool) == {"status": "Progressing", "message": "RayService serviceStatus=unknown"}


def test_pool_whose_pod_cannot_start_is_degraded_one_whose_pods_start_is_progressing() -> None:
    message = 'pod cpu-x7k2p-head-9tq4d container ray: Back-off pulling image "docker.io/baton/pool:nope"'

    def pool(reason: str) -> dict:
        return {
            "kind": "ModelPool",
            "metadata": {"name": "cpu", "generation": 1},
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    condition(
                        "Ready", "False", "RayService serviceStatus=unknown", reason="RayServiceNotRunning"
                    ),
                    condition("PodsReady", "False", message, reason=reason),
                ],
            },
        }

    assert health(pool("ImagePullBackOff")) == {"status": "Degraded", "message": message}
    assert health(pool(PODS_STARTING))["status"] == "Progressing"


def test_benchmark_ready_is_healthy() -> None:
    bench = {
        "kind": "Benchmark",
        "metadata": {"name": "medical-extraction", "generation": 4},
        "status": {
            "observedGeneration": 4,
            "items": 40,
            "conditions": [condition("Ready", "True", "40 items")],
        },
    }
    assert health(bench) == {"status": "Healthy", "message": "40 items"}


def test_argocd_cm_patch_installs_the_script_for_every_kind() -> None:
    patch = yaml.safe_load(CM_PATCH.read_text())
    assert patch["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    assert sorted(patch["data"]) == sorted(
        f"resource.customizations.health.baton.dev_{kind}" for kind in KINDS
    )
    assert sorted(health_keys()) == sorted(patch["data"])
    assert all(script == HEALTH_LUA.read_text() for script in patch["data"].values())
