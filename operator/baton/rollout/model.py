"""The vocabulary of the rollout core: what a shell observed, and what it must do next.

Everything here is a frozen value. A shell (the kopf operator or `baton up`) builds an
`Observations` from the world, calls `baton.rollout.reconcile`, persists the returned status and
carries out the returned actions. Actions are idempotent descriptions of a desired state, never
increments: carrying one out twice, or after a crash, leaves the world as carrying it out once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from baton.api.decision import Decision
from baton.api.deployment import ModelDeploymentStatus, Phase, RevisionStatus

if TYPE_CHECKING:
    from baton.analysis.outcome import GateOutcome

# --- observations -------------------------------------------------------------------------------


class RevisionState(StrEnum):
    """What the data plane reports for one revision."""

    LOADING = "Loading"  # told to run, not answering yet
    READY = "Ready"  # answers requests
    FAILED = "Failed"  # refused or crashed: digest mismatch, corrupt GGUF, engine error
    UNSCHEDULABLE = "Unschedulable"  # left out of the pool because its memory does not fit


@dataclass(frozen=True)
class RevisionHealth:
    state: RevisionState
    message: str = ""


@dataclass(frozen=True)
class OfflineResult:
    """The offline gate's outcome for one candidate revision on one set of benchmarks.

    The shell computes `outcome` with `baton.analysis`'s pure functions from the benchmark run it
    started for a `RunBenchmark` action. A result whose `candidate` or `benchmarks` no longer match
    the rollout (the spec changed) is ignored and the benchmark is asked for again.
    """

    candidate: str
    benchmarks: tuple[str, ...]
    outcome: GateOutcome


@dataclass(frozen=True)
class OnlineResult:
    """The online gate's outcome for the current canary step, from samples since the step started.

    `observed_at` is when the samples were read (the read's start): a step ends only on a result
    read after its pause, so its verdict covers the whole pause.
    """

    candidate: str
    step: int
    candidate_requests: int
    outcome: GateOutcome
    observed_at: datetime


@dataclass(frozen=True)
class Observations:
    """What the shell saw of the world for one deployment, just before calling `reconcile`.

    `revisions` maps every revision the data plane runs (or was told to run) to its health; a
    revision missing from it is not running, so `reconcile` asks to deploy it again if status
    still wants it, and a running revision that status no longer wants is asked to be removed.
    `served_weights` is the traffic split the data plane was last given for this deployment
    (the k8s shell reads it from the RayService's `serveConfigV2`); None means the shell applies
    weights synchronously, so they are always the ones in status.
    """

    revisions: Mapping[str, RevisionHealth] = field(default_factory=dict)
    served_weights: Mapping[str, int] | None = None
    offline: OfflineResult | None = None
    online: OnlineResult | None = None

    def health(self, revision: str) -> RevisionHealth:
        return self.revisions.get(revision, RevisionHealth(RevisionState.LOADING))


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeployRevision:
    """Make `revision` run in the data plane (no traffic unless a SetWeights gives it some)."""

    revision: RevisionStatus


@dataclass(frozen=True)
class SetWeights:
    """The complete traffic split of the deployment, in percent per revision name, and the revision
    that receives mirrored (shadow) copies of the requests, if any: what the data plane must serve.

    Built only by `baton.rollout.traffic_split`, from which the renderer and KServe derive theirs.
    """

    weights: Mapping[str, int]
    shadow: str | None = None


@dataclass(frozen=True)
class RemoveRevision:
    """Stop running `revision` (it already has no traffic)."""

    revision: str


@dataclass(frozen=True)
class RunBenchmark:
    """Have both revisions answer `benchmarks` (with header `X-Baton-Revision`) and report an OfflineResult.

    Idempotent: the shell starts a run only if none is running or finished for the same
    (candidate, benchmarks) key.
    """

    champion: str
    candidate: str
    benchmarks: tuple[str, ...]


@dataclass(frozen=True)
class ObserveCanary:
    """Collect live samples of both revisions since `since` (RFC 3339) and report an OnlineResult.

    `until` (RFC 3339) is when the step's pause ends: the shell samples again right after it, since
    the step's verdict waits for that sample. During the bake after a promotion `step` is the number
    of canary steps (one past the last), `candidate` the new champion, `champion` the previous one,
    and `mirrored` names the previous one: it only receives mirrored requests, so its samples are
    its shadow answers, not client traffic.
    """

    champion: str
    candidate: str
    step: int
    since: str
    until: str
    mirrored: str | None = None


@dataclass(frozen=True)
class EmitEvent:
    """A Kubernetes Event on the deployment (locally: a log line). Emitted once per transition."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class UpdateCandidateStatus:
    """Set a ModelCandidate's status; only returned when it differs from what the candidate shows.

    `record` is the candidate's whole decision record (offline test, each canary step, bake, final
    verdict); None leaves the record the candidate shows as it is.
    """

    candidate: str
    phase: Phase
    message: str
    decision: Decision | None = None
    record: tuple[Decision, ...] | None = None


Action = (
    DeployRevision
    | SetWeights
    | RemoveRevision
    | RunBenchmark
    | ObserveCanary
    | EmitEvent
    | UpdateCandidateStatus
)


@dataclass(frozen=True)
class ReconcileResult:
    """The new status (persist it first) and the actions that bring the world in line with it.

    `requeue_after` is the number of seconds after which `reconcile` must be called again even if
    nothing changes (a canary pause ends); 0 means "again right away" (a transition happened and
    the next one may already be due); None means "only when something changes".
    """

    status: ModelDeploymentStatus
    actions: tuple[Action, ...]
    requeue_after: float | None
