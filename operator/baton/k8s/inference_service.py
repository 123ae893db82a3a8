"""`runtime: kserve`: a ModelDeployment served by a KServe `InferenceService` instead of a Ray Serve pool.

Built with the `kserve` package's own generated models, so the manifest is what KServe's API
accepts (the integration tests check it against KServe's real CRD, vendored in manifests/third_party/).
KServe's canary mechanism carries the split: while a candidate is on trial (benchmarking included,
at 0 %) the predictor points at the candidate's artifact with `canaryTrafficPercent` set to the
canary weight, and KServe keeps the previously rolled-out revision (the champion) for the rest.
Without a candidate the predictor points at the champion with 100 %: the percentage is always
written, because the operator merge-patches the spec and a key left out would keep its old value.
KServe cannot pin a request to a revision by header, so a kserve deployment's offline
benchmarks need a Ray Serve pool; its online canary works as for any deployment.

The `kserve` package imports its whole model server (FastAPI, gRPC, pandas) on import; it is
imported only when a kserve deployment exists, and lives in the optional `kserve` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baton.api import ModelDeployment
from baton.api.common import API_VERSION
from baton.rollout.model import RevisionHealth, RevisionState
from baton.rollout.traffic import traffic_split

LATEST_LABEL = "baton.dev/revision"  # the revision the predictor points at (the candidate while on trial)
CHAMPION_LABEL = "baton.dev/champion"  # the revision KServe keeps for the rest of the traffic
# KServe's modelStatus.transitionStatus values that mean the latest revision will not load.
FAILED_TRANSITIONS = frozenset({"BlockedByFailedLoad", "InvalidSpec"})


def inference_service(deployment: ModelDeployment, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The InferenceService manifest that serves `deployment`'s status (champion, candidate, weight)."""
    from kserve import (
        ApiClient,
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )
    from kubernetes.client import V1ObjectMeta, V1OwnerReference

    status = deployment.status
    assert status is not None and status.champion is not None
    champion, latest = status.champion, status.candidate or status.champion
    predictor = V1beta1PredictorSpec(
        model=V1beta1ModelSpec(
            model_format=V1beta1ModelFormat(name=str(latest.artifact.format)),
            storage_uri=latest.artifact.uri,
        ),
        canary_traffic_percent=traffic_split(deployment.spec, status).weights[latest.revision],
    )
    body = V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=metadata["name"],
            namespace=metadata.get("namespace", "default"),
            labels={
                "baton.dev/deployment": metadata["name"],
                LATEST_LABEL: latest.revision,
                CHAMPION_LABEL: champion.revision,
            },
            owner_references=[
                V1OwnerReference(
                    api_version=API_VERSION,
                    kind="ModelDeployment",
                    name=metadata["name"],
                    uid=metadata["uid"],
                    controller=True,
                    block_owner_deletion=True,
                )
            ],
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )
    # kserve's own serializer: kubernetes>=37's (pydantic) one dumps kserve's models attribute by attribute.
    return ApiClient().sanitize_for_serialization(body)


def observe_revisions(body: Mapping[str, Any] | None) -> dict[str, RevisionHealth]:
    """Health of the revisions an InferenceService runs: the latest from KServe's status, the champion
    kept behind a canary as ready (KServe only keeps a revision that was rolled out, i.e. was ready)."""
    if not body:
        return {}
    labels = body.get("metadata", {}).get("labels") or {}
    latest = labels.get(LATEST_LABEL)
    if not latest:
        return {}
    champion = labels.get(CHAMPION_LABEL, latest)
    revisions = {champion: RevisionHealth(RevisionState.READY)} if champion != latest else {}
    revisions[latest] = _latest_health(body)
    return revisions


def _latest_health(body: Mapping[str, Any]) -> RevisionHealth:
    status = body.get("status") or {}
    if status.get("observedGeneration") != body.get("metadata", {}).get("generation"):
        # KServe has not acted on this spec yet: what status says is about the previous one.
        return RevisionHealth(RevisionState.LOADING)
    model = status.get("modelStatus") or {}
    if model.get("transitionStatus") in FAILED_TRANSITIONS:
        failure = model.get("lastFailureInfo") or {}
        return RevisionHealth(RevisionState.FAILED, failure.get("message") or model["transitionStatus"])
    conditions = {c.get("type"): c for c in status.get("conditions", [])}
    ready = conditions.get("Ready")
    if ready is None:
        return RevisionHealth(RevisionState.LOADING)
    if ready.get("status") == "True":
        return RevisionHealth(RevisionState.READY)
    if "fail" in (ready.get("reason", "") + ready.get("message", "")).lower():
        return RevisionHealth(RevisionState.FAILED, ready.get("message", ""))
    return RevisionHealth(RevisionState.LOADING)
