"""`runtime: kserve`: a ModelDeployment served by a KServe `InferenceService` instead of a Ray Serve pool.

Built with the `kserve` package's own generated models, so the manifest is what KServe's API
accepts. KServe's canary mechanism carries the split: while a candidate is on trial the
predictor points at the candidate's artifact with `canaryTrafficPercent` set to the canary
weight, and KServe keeps the previously rolled-out revision (the champion) for the rest.
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

MODEL_FORMAT = "gguf"


def inference_service(deployment: ModelDeployment, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The InferenceService manifest that serves `deployment`'s status (champion, candidate, weight)."""
    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )
    from kubernetes.client import ApiClient, V1ObjectMeta, V1OwnerReference

    status = deployment.status
    assert status is not None and status.champion is not None
    serving = (
        status.candidate if status.candidate is not None and status.canary_weight > 0 else status.champion
    )
    predictor = V1beta1PredictorSpec(
        model=V1beta1ModelSpec(
            model_format=V1beta1ModelFormat(name=MODEL_FORMAT), storage_uri=serving.artifact.uri
        ),
        canary_traffic_percent=status.canary_weight if serving is status.candidate else None,
    )
    body = V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=V1ObjectMeta(
            name=metadata["name"],
            namespace=metadata.get("namespace", "default"),
            labels={"baton.dev/deployment": metadata["name"], "baton.dev/revision": serving.revision},
            annotations={"baton.dev/digest": serving.artifact.digest},
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
    return ApiClient().sanitize_for_serialization(body)


def observe_revisions(body: Mapping[str, Any] | None) -> dict[str, RevisionHealth]:
    """Health of the revision an InferenceService runs, from its `Ready` condition."""
    if not body:
        return {}
    revision = body.get("metadata", {}).get("labels", {}).get("baton.dev/revision")
    if not revision:
        return {}
    conditions = {c.get("type"): c for c in (body.get("status") or {}).get("conditions", [])}
    ready = conditions.get("Ready")
    if ready is None:
        return {revision: RevisionHealth(RevisionState.LOADING)}
    if ready.get("status") == "True":
        return {revision: RevisionHealth(RevisionState.READY)}
    if "fail" in (ready.get("reason", "") + ready.get("message", "")).lower():
        return {revision: RevisionHealth(RevisionState.FAILED, ready.get("message", ""))}
    return {revision: RevisionHealth(RevisionState.LOADING)}
