"""Rendering a pool's serve configuration from its resources: the control plane's half of the serve contract.

A pure function of the ModelPool and the statuses of the ModelDeployments that name it: the
champion, candidate and (while baking) previous revisions in each status, and the traffic split
they imply (`traffic_split`, the one the state machine's SetWeights carries), become one
`baton_serving.config.PoolConfig`. Because the serve config follows from status alone, a shell
that crashed between writing status and rendering renders the same config when it comes back.

Dense packing: revisions are placed in a fixed order (every champion before any candidate,
deployments by name) until the pool's usable memory is spent. A deployment whose champion does not
fit is left out entirely; a candidate (or a baking previous champion) that does not fit is left out
while its champion keeps serving, with that revision's traffic share. Both are reported in
`RenderedPool.unschedulable` so the shells can raise the pool's `Unschedulable` condition and hold
the rollout until memory frees up."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from baton.api.deployment import EngineSettings, ModelDeployment, RevisionStatus, Runtime
from baton.api.pool import ModelPool
from baton.rollout.machine import parse_duration
from baton.rollout.traffic import traffic_split
from baton_serving.config import (
    AdapterRef,
    ArtifactRef,
    Autoscaling,
    DeploymentSpec,
    EngineKind,
    FetchPolicy,
    PoolConfig,
    RevisionSpec,
    RoutePolicy,
)
from baton_serving.resources import replica_memory_bytes

STRICT_FETCH = FetchPolicy()

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_QUANTITY_FACTORS = {
    None: 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
}
_ENGINES = {Runtime.LLAMACPP: EngineKind.LLAMACPP, Runtime.VLLM: EngineKind.VLLM}


@dataclass(frozen=True)
class RenderedPool:
    """A pool's serve config and its memory accounting."""

    config: PoolConfig
    memory_requested_bytes: int
    memory_capacity_bytes: int
    unschedulable: tuple[str, ...]  # revision names left out because they do not fit


def parse_quantity(text: str) -> int:
    """Bytes in a Kubernetes quantity such as `8Gi` or `512M`."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"not a quantity: {text!r} (expected e.g. 8Gi, 512Mi)")
    number, suffix = match.groups()
    return int(float(number) * _QUANTITY_FACTORS[suffix])


def pool_capacity_bytes(pool: ModelPool) -> int:
    spec = pool.spec
    total = spec.workers * parse_quantity(spec.worker_resources.memory)
    return total * (100 - spec.memory_headroom_percent) // 100


def render_pool(
    pool: ModelPool, deployments: Sequence[ModelDeployment], fetch: FetchPolicy = STRICT_FETCH
) -> RenderedPool:
    """The serve config of `pool` from the deployments naming it (`runtime: kserve` ones are skipped).

    `fetch` is where the pool's replicas may read artifacts from: the operator's own policy (by
    default the strictest, public https only).
    """
    members = sorted(
        (
            deployment
            for deployment in deployments
            if deployment.spec.pool == pool.metadata.name
            and deployment.spec.runtime != Runtime.KSERVE
            and deployment.status is not None
            and deployment.status.champion is not None
        ),
        key=lambda deployment: deployment.metadata.name,
    )
    capacity = pool_capacity_bytes(pool)
    requested = 0
    unschedulable: list[str] = []
    placed_champions: list[ModelDeployment] = []
    for deployment in members:
        need = _need(deployment, _champion(deployment))
        if requested + need > capacity:
            unschedulable.append(_champion(deployment).revision)
            continue
        requested += need
        placed_champions.append(deployment)
    placed: set[str] = set()
    for deployment in placed_champions:
        for revision in _others(deployment):
            need = _need(deployment, revision)
            if requested + need > capacity:
                unschedulable.append(revision.revision)
                continue
            requested += need
            placed.add(revision.revision)
    config = PoolConfig(
        pool=pool.metadata.name,
        deployments=[_deployment_spec(deployment, placed) for deployment in placed_champions],
        ingress_replicas=pool.spec.ingress_replicas,
        fetch=fetch,
    )
    return RenderedPool(config, requested, capacity, tuple(unschedulable))


def _champion(deployment: ModelDeployment) -> RevisionStatus:
    assert deployment.status is not None and deployment.status.champion is not None
    return deployment.status.champion


def _need(deployment: ModelDeployment, revision: RevisionStatus) -> int:
    """Memory for the most replicas the revision may run (a scaled-up revision must still fit), by
    the data plane's own per-replica figure, the one Ray reserves."""
    spec = _revision_spec(deployment, revision)
    return spec.most_replicas * replica_memory_bytes(spec)


def _others(deployment: ModelDeployment) -> list[RevisionStatus]:
    """The revisions a deployment runs beside its champion: the candidate, or the baking previous one."""
    status = deployment.status
    assert status is not None
    return [revision for revision in (status.candidate, status.previous) if revision is not None]


def _deployment_spec(deployment: ModelDeployment, placed: set[str]) -> DeploymentSpec:
    status = deployment.status
    assert status is not None
    champion = _champion(deployment)
    others = [revision for revision in _others(deployment) if revision.revision in placed]
    split = traffic_split(deployment.spec, status)
    # A revision left out for lack of memory leaves its share with the champion.
    kept = {revision.revision for revision in others} | {champion.revision}
    weights = {name: float(weight) for name, weight in split.weights.items() if name in kept}
    weights[champion.revision] += sum(weight for name, weight in split.weights.items() if name not in kept)
    return DeploymentSpec(
        name=deployment.metadata.name,
        revisions=[_revision_spec(deployment, revision) for revision in (champion, *others)],
        route=RoutePolicy(
            weights=weights,
            shadow=split.shadow if split.shadow in kept else None,
            sticky_header=deployment.spec.rollout.sticky_session_header,
        ),
        max_output_tokens=deployment.spec.engine.max_output_tokens,
        default_json_schema=structured.json_schema
        if (structured := deployment.spec.structured_output)
        else None,
    )


def _revision_spec(deployment: ModelDeployment, revision: RevisionStatus) -> RevisionSpec:
    engine = deployment.spec.engine
    artifact = revision.artifact
    adapter = artifact.adapter
    return RevisionSpec(
        name=revision.revision,
        artifact=ArtifactRef(
            uri=artifact.uri,
            digest=artifact.digest,
            size_bytes=artifact.size_bytes,
            adapter=None
            if adapter is None
            else AdapterRef(uri=adapter.uri, digest=adapter.digest, size_bytes=adapter.size_bytes),
        ),
        engine=_ENGINES[Runtime(deployment.spec.runtime)],
        quantization=artifact.quantization,
        context_length=engine.context_length,
        threads=engine.threads or 1,
        num_replicas=engine.replicas,
        autoscaling=_autoscaling(engine),
    )


def _autoscaling(engine: EngineSettings) -> Autoscaling | None:
    scaling = engine.autoscaling
    if scaling is None:
        return None
    return Autoscaling(
        max_replicas=scaling.max_replicas,
        target_ongoing_requests=scaling.target_ongoing_requests,
        look_back_period_s=parse_duration(scaling.look_back),
        upscale_delay_s=parse_duration(scaling.scale_up_delay),
        downscale_delay_s=parse_duration(scaling.scale_down_delay),
    )
