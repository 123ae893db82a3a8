"""baton's rollout core: the pure state machine that both shells (kopf operator, `baton up`) drive.

The public surface is small on purpose:

    result = reconcile(deployment, candidates, observations, now)
    # 1. persist result.status as the deployment's status (the only thing the core remembers)
    # 2. carry out result.actions in order; each is idempotent
    # 3. call reconcile again after result.requeue_after seconds (0: right away), or on any change

    from baton.rollout.render import render_pool
    rendered = render_pool(pool, deployments)   # -> RenderedPool(config: baton_serving PoolConfig, ...)

    traffic_split(spec, status)                 # the SetWeights a status implies (renderer, KServe)

No network, clock or Kubernetes in here: the shell passes `now`, reads the world into
`Observations` (data-plane health per revision, the weights the data plane serves, offline and
online gate outcomes computed with `baton.analysis`) and owns every side effect. Because the
serve config is rendered from status, a shell that renders the pool after each status write may
treat DeployRevision / SetWeights / RemoveRevision as "re-render the pool"; a shell with its
own data-plane handle (local mode) may apply them one by one.
"""

from baton.rollout.machine import (
    APPROVAL_ANNOTATION,
    CANARY_SAMPLE_INTERVAL_S,
    bake_ends,
    candidate_phase,
    closes_step,
    format_time,
    merge_conditions,
    next_sample_delay,
    parse_duration,
    parse_time,
    reconcile,
    revision_name,
)
from baton.rollout.model import (
    Action,
    DeployRevision,
    EmitEvent,
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    ReconcileResult,
    RemoveRevision,
    RevisionHealth,
    RevisionState,
    RunBenchmark,
    SetWeights,
    UpdateCandidateStatus,
)
from baton.rollout.traffic import traffic_split

__all__ = [
    "APPROVAL_ANNOTATION",
    "CANARY_SAMPLE_INTERVAL_S",
    "Action",
    "DeployRevision",
    "EmitEvent",
    "Observations",
    "ObserveCanary",
    "OfflineResult",
    "OnlineResult",
    "ReconcileResult",
    "RemoveRevision",
    "RevisionHealth",
    "RevisionState",
    "RunBenchmark",
    "SetWeights",
    "UpdateCandidateStatus",
    "bake_ends",
    "candidate_phase",
    "closes_step",
    "format_time",
    "merge_conditions",
    "next_sample_delay",
    "parse_duration",
    "parse_time",
    "reconcile",
    "revision_name",
    "traffic_split",
]
