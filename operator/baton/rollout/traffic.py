"""The traffic split a deployment's status implies, derived in one place.

The state machine returns it as its `SetWeights` action, the renderer writes it into the pool's
serve config and KServe's manifest takes its canary percentage from it, so the three can never
disagree about who gets which share of the requests.
"""

from __future__ import annotations

from baton.api.deployment import ModelDeploymentSpec, ModelDeploymentStatus, Phase
from baton.rollout.model import SetWeights


def traffic_split(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> SetWeights:
    """Percent per revision and the shadow: the champion alone; champion and candidate at the canary
    weight (the candidate mirrored while benchmarking if `rollout.shadow`); while baking, the new
    champion with all traffic and the previous one mirrored, so the online test compares the two."""
    champion = status.champion
    if champion is None:
        raise ValueError("no traffic split without a champion")
    if status.phase == Phase.BAKING and status.previous is not None:
        return SetWeights({champion.revision: 100, status.previous.revision: 0}, status.previous.revision)
    if status.candidate is None:
        return SetWeights({champion.revision: 100})
    shadow = status.candidate.revision if status.phase == Phase.BENCHMARKING and spec.rollout.shadow else None
    return SetWeights(
        {champion.revision: 100 - status.canary_weight, status.candidate.revision: status.canary_weight},
        shadow,
    )
