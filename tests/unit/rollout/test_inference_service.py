"""`runtime: kserve`: the InferenceService the operator renders from a deployment's status, and its reading.

Statuses come from the rollout machine itself (`in_phase`), so each case is one the operator meets.
"""

from __future__ import annotations

from typing import Any

import pytest

from baton.k8s.inference_service import inference_service, observe_revisions
from baton.rollout.model import RevisionHealth, RevisionState
from tests.unit.rollout.helpers import CANDIDATE, CHAMPION, in_phase

pytestmark = pytest.mark.unit

METADATA = {"name": "medical", "namespace": "ns", "uid": "deployment-uid"}
READY, LOADING, FAILED = RevisionState.READY, RevisionState.LOADING, RevisionState.FAILED


def rendered(phase: str, **spec: Any) -> dict[str, Any]:
    return inference_service(in_phase(phase, runtime="kserve", **spec), METADATA)


def test_a_champion_alone_gets_all_traffic_from_its_own_artifact() -> None:
    manifest = rendered("Serving")
    assert manifest["apiVersion"] == "serving.kserve.io/v1beta1"
    assert manifest["kind"] == "InferenceService"
    assert manifest["spec"] == {
        "predictor": {
            # `name: ""` is the kserve model's default (a container name, unused by a model spec).
            "model": {"modelFormat": {"name": "gguf"}, "storageUri": "/models/v1.gguf", "name": ""},
            "canaryTrafficPercent": 100,
        }
    }
    assert manifest["metadata"]["labels"] == {
        "baton.dev/deployment": "medical",
        "baton.dev/revision": CHAMPION,
        "baton.dev/champion": CHAMPION,
    }


def test_the_deployment_owns_its_inference_service() -> None:
    metadata = rendered("Serving")["metadata"]
    assert (metadata["name"], metadata["namespace"]) == ("medical", "ns")
    assert metadata["ownerReferences"] == [
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": "medical",
            "uid": "deployment-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_a_canary_points_the_predictor_at_the_candidate_with_the_canary_weight() -> None:
    manifest = rendered("Canary")
    assert manifest["spec"]["predictor"] == {
        "model": {"modelFormat": {"name": "gguf"}, "storageUri": "/models/v2.gguf", "name": ""},
        "canaryTrafficPercent": 10,  # the first rollout step's weight
    }
    labels = manifest["metadata"]["labels"]
    assert (labels["baton.dev/revision"], labels["baton.dev/champion"]) == (CANDIDATE, CHAMPION)


def test_a_candidate_under_benchmark_runs_beside_the_champion_without_traffic() -> None:
    predictor = rendered("Benchmarking")["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "/models/v2.gguf"
    assert predictor["canaryTrafficPercent"] == 0


def kserve_status(manifest: dict[str, Any], *, observed: int = 1, **status: Any) -> dict[str, Any]:
    """`manifest` as stored at generation 1, with the status KServe's controller would write."""
    metadata = {**manifest["metadata"], "generation": 1}
    return {**manifest, "metadata": metadata, "status": {"observedGeneration": observed, **status}}


def ready(status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message}]}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param({}, RevisionHealth(LOADING), id="no-conditions-yet"),
        pytest.param(ready("True"), RevisionHealth(READY), id="ready"),
        pytest.param(ready("Unknown", "RevisionMissing"), RevisionHealth(LOADING), id="still-loading"),
        pytest.param(
            ready("False", "RevisionFailed", "pull failed"),
            RevisionHealth(FAILED, "pull failed"),
            id="revision-failed",
        ),
        pytest.param(
            {
                **ready("False"),
                "modelStatus": {
                    "transitionStatus": "BlockedByFailedLoad",
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "bad gguf header"},
                },
            },
            RevisionHealth(FAILED, "bad gguf header"),
            id="model-load-failed",
        ),
        pytest.param(
            {**ready("False"), "modelStatus": {"transitionStatus": "InvalidSpec"}},
            RevisionHealth(FAILED, "InvalidSpec"),
            id="invalid-spec",
        ),
    ],
)
def test_the_latest_revision_health_follows_kserve_status(
    status: dict[str, Any], expected: RevisionHealth
) -> None:
    assert observe_revisions(kserve_status(rendered("Serving"), **status)) == {CHAMPION: expected}


def test_a_status_about_an_older_spec_says_nothing_about_the_new_revision() -> None:
    stale = kserve_status(rendered("Canary"), observed=0, **ready("True"))
    assert observe_revisions(stale) == {CHAMPION: RevisionHealth(READY), CANDIDATE: RevisionHealth(LOADING)}


def test_behind_a_canary_the_kept_champion_counts_as_ready() -> None:
    canary = kserve_status(rendered("Canary"), **ready("Unknown"))
    assert observe_revisions(canary) == {CHAMPION: RevisionHealth(READY), CANDIDATE: RevisionHealth(LOADING)}


@pytest.mark.parametrize("body", [None, {}, {"metadata": {"labels": {"app": "not-baton"}}}])
def test_an_inference_service_baton_did_not_label_runs_no_revision(body: dict[str, Any] | None) -> None:
    assert observe_revisions(body) == {}
