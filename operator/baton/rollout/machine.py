"""The rollout state machine: one pure step from (deployment, candidates, observations) to (status, actions).

Why a pure function: the operator can crash anywhere, and two shells (kopf, `baton up`) must
behave the same. Everything the machine remembers lives in the deployment's `status`, so a
restarted shell that calls `reconcile` again from status alone reaches the same result, and
every action is a desired state the shell can apply again without harm.

Phases of a deployment (`status.phase`):

    Pending --champion ready--> Serving --candidate offered--> Benchmarking
    Benchmarking --offline Promote--> Canary(step 0..n-1) --every gate passed--> Promoting
    Promoting --all traffic moved--> Baking (bakeTime > 0) --no regression--> Promoted
    Promoting --all traffic moved, no bake--> Promoted
    Benchmarking --offline Reject / artifact refused / progress deadline--> Rejected
    Benchmarking --offline Inconclusive--> Inconclusive
    Canary --online Reject, revision failed, candidate withdrawn--> RollingBack --> RolledBack
    Canary --a step without enough evidence by its deadline--> RollingBack --> Inconclusive
    Baking --online Reject against the previous champion--> RollingBack --> RolledBack
    Pending --champion refused, or not ready by the progress deadline--> Failed

Promoted, Rejected, Inconclusive and RolledBack are resting phases: the champion serves and the next
offer starts a new rollout. What a step or a rollout concluded is decided by
`baton.analysis.decision`; this module only moves phases and asks for the actions they imply. One
offer is evaluated at a time; others queue in the order they were created (their ModelCandidate
status says so). A change of `spec.model` after the first champion is an offer like any candidate
while the champion is the one spec.model declared: GitOps can replace a model, but only through the
same gates. Once a ModelCandidate became champion, `spec.model` (the initial champion) is no longer
consulted. A candidate's outcome is final for its version (versions are immutable).

The machine makes at most one transition per call; when it made one it asks to be called
again right away (`requeue_after == 0`). Decisions are appended to `status.history` (as
summaries) in the same status write that clears the candidate, so a promotion can never be
counted twice; `status.record` keeps every decision of the rollout with its evidence, and each
ModelCandidate's status is given the record of its own rollout.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from baton.analysis.decision import (
    REASON_BAKE_PASSED,
    REASON_DEADLINE,
    Window,
    bake_verdict,
    rollout_verdict,
    step_verdict,
)
from baton.api.candidate import ModelCandidate
from baton.api.common import Artifact, Condition, ConditionStatus
from baton.api.decision import Decision, Gate, Verdict
from baton.api.deployment import (
    HISTORY_LIMIT,
    RECORD_LIMIT,
    CanaryStatus,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    Phase,
    ReplacementMode,
    RevisionStatus,
)
from baton.rollout.model import (
    Action,
    DeployRevision,
    EmitEvent,
    Observations,
    ObserveCanary,
    OnlineResult,
    ReconcileResult,
    RemoveRevision,
    RevisionState,
    RunBenchmark,
    SetWeights,
    UpdateCandidateStatus,
)
from baton.rollout.traffic import traffic_split

APPROVAL_ANNOTATION = "baton.dev/approved"
ACTIVE_PHASES = frozenset(
    {Phase.BENCHMARKING, Phase.CANARY, Phase.PROMOTING, Phase.BAKING, Phase.ROLLING_BACK}
)
FINAL_CANDIDATE_PHASES = frozenset(
    {Phase.PROMOTED, Phase.REJECTED, Phase.INCONCLUSIVE, Phase.ROLLED_BACK, Phase.FAILED}
)
REASON_ARTIFACT_REFUSED = "ArtifactRefused"
REASON_REVISION_FAILED = "RevisionFailed"
REASON_WITHDRAWN = "CandidateWithdrawn"
# How often a running canary step (or bake) is looked at: a violation stops it within this.
CANARY_SAMPLE_INTERVAL_S = 2.0

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_REVISION_NAME = 63
_T = TypeVar("_T")


def revision_name(deployment: str, version: str) -> str:
    """The data-plane name of a version of a deployment: `<deployment>-<version>`, a DNS label."""
    name = f"{deployment}-{version}"
    if len(name) <= _MAX_REVISION_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_REVISION_NAME - 9].rstrip('-')}-{digest}"


def parse_duration(text: str) -> float:
    """Seconds in a duration like `30s`, `5m`, `1h30m`, `500ms` (the API's DURATION_PATTERN)."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r} (expected e.g. 30s, 5m, 1h30m, 500ms)")
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the form every time in status takes."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def closes_step(step_ends: datetime, read_at: datetime, previous_read: datetime | None) -> bool:
    """Whether a canary sample read at `read_at` is the first read after its step's pause ended: the
    one the step's verdict waits for (`previous_read`: when the sample before it was read, if any)."""
    return read_at >= step_ends and (previous_read is None or previous_read < step_ends)


def next_sample_delay(
    previous: datetime | None, started: datetime, finished: datetime, step_ends: datetime
) -> float:
    """Seconds until the canary step is looked at again, after a sample read from `started` to `finished`.

    `previous` is when the sample before it was read. Every CANARY_SAMPLE_INTERVAL_S while the
    step runs, so a violation stops it early; at once when the pause has ended since the sample
    began (the step's verdict waits for a sample read after its end) or when this is that sample.
    """
    if started >= step_ends:
        return 0.0 if closes_step(step_ends, started, previous) else CANARY_SAMPLE_INTERVAL_S
    return min(CANARY_SAMPLE_INTERVAL_S, max(0.0, (step_ends - finished).total_seconds()))


def bake_ends(spec: ModelDeploymentSpec, status: ModelDeploymentStatus) -> datetime | None:
    """When the bake of a deployment in phase Baking ends: `rollout.bakeTime` after it began (None in
    any other phase)."""
    if status.phase != Phase.BAKING or status.phase_since is None:
        return None
    return parse_time(status.phase_since) + timedelta(seconds=parse_duration(spec.rollout.bake_time))


def candidate_phase(decision: Decision) -> Phase:
    """The phase a ModelCandidate ends in, given the final decision about its version."""
    if decision.verdict == Verdict.PROMOTE:
        return Phase.PROMOTED
    if decision.verdict == Verdict.INCONCLUSIVE:
        return Phase.INCONCLUSIVE
    if decision.reason in (REASON_ARTIFACT_REFUSED, REASON_DEADLINE):
        return Phase.FAILED
    if decision.gate == Gate.ONLINE or decision.reason in (REASON_REVISION_FAILED, REASON_WITHDRAWN):
        return Phase.ROLLED_BACK
    return Phase.REJECTED


@dataclass(frozen=True)
class Offer:
    """A version offered to the deployment: by a ModelCandidate, or by a change of `spec.model`."""

    version: str
    artifact: Artifact
    candidate: str | None


@dataclass(frozen=True)
class _Step:
    status: ModelDeploymentStatus
    actions: tuple[Action, ...] = ()
    requeue_after: float | None = None


@dataclass(frozen=True)
class _Context:
    deployment: ModelDeployment
    candidates: tuple[ModelCandidate, ...]
    observations: Observations
    now: datetime

    @property
    def name(self) -> str:
        return self.deployment.metadata.name

    @property
    def stamp(self) -> str:
        return format_time(self.now)


def reconcile(
    deployment: ModelDeployment,
    candidates: Sequence[ModelCandidate],
    observations: Observations,
    now: datetime,
) -> ReconcileResult:
    """One step of the rollout of `deployment`.

    `candidates` are the ModelCandidates in the deployment's namespace (others are ignored);
    `observations` what the shell saw of the data plane and the gates; `now` an aware datetime.
    Persist `status` first, then carry out `actions` in order; an unchanged world gives an
    unchanged status and no actions except the idempotent requests (RunBenchmark, ObserveCanary,
    SetWeights while waiting for them to apply).
    """
    own = tuple(
        sorted(
            (candidate for candidate in candidates if candidate.spec.deployment == deployment.metadata.name),
            key=lambda candidate: (
                str(candidate.metadata.model_extra.get("creationTimestamp", "")),
                candidate.metadata.name,
            ),
        )
    )
    context = _Context(deployment, own, observations, now)
    before = deployment.status or ModelDeploymentStatus()
    step = _advance(context, before.model_copy(deep=True))
    status = _with_conditions(context, before, step.status)
    if status.phase != before.phase or status.phase_since is None:
        status.phase_since = context.stamp
    status.ungated = deployment.spec.analysis.ungated
    actions = step.actions + _converge(context, status, step.actions)
    actions += _candidate_updates(context, before, status)
    return ReconcileResult(status=status, actions=actions, requeue_after=step.requeue_after)


# --- transitions --------------------------------------------------------------------------------


def _advance(context: _Context, status: ModelDeploymentStatus) -> _Step:
    spec_model = context.deployment.spec.model
    champion = status.champion
    not_serving_yet = status.phase in (Phase.PENDING, Phase.FAILED) and status.candidate is None
    if champion is None or (not_serving_yet and not _is(champion, spec_model.version, spec_model.artifact)):
        return _declare_champion(context, status)
    match status.phase:
        case Phase.PENDING | Phase.FAILED if status.candidate is None:
            return _await_champion(context, status)
        case Phase.BENCHMARKING:
            return _benchmarking(context, status)
        case Phase.CANARY:
            return _canary(context, status)
        case Phase.PROMOTING:
            return _promoting(context, status)
        case Phase.BAKING:
            return _baking(context, status)
        case Phase.ROLLING_BACK:
            return _rolling_back(context, status)
        case _:
            return _idle(context, status)


def _declare_champion(context: _Context, status: ModelDeploymentStatus) -> _Step:
    model = context.deployment.spec.model
    previous = status.champion
    champion = RevisionStatus(
        revision=revision_name(context.name, model.version),
        version=model.version,
        artifact=model.artifact,
        since=context.stamp,
    )
    status.champion, status.candidate, status.canary, status.canary_weight = champion, None, None, 0
    status.phase = Phase.PENDING
    actions: list[Action] = [DeployRevision(champion), SetWeights({champion.revision: 100})]
    if previous is not None and previous.revision != champion.revision:
        actions.append(RemoveRevision(previous.revision))
    return _Step(status, tuple(actions), 0)


def _await_champion(context: _Context, status: ModelDeploymentStatus) -> _Step:
    champion = _required(status.champion)
    health = context.observations.health(champion.revision)
    if health.state == RevisionState.READY:
        status.phase = Phase.SERVING
        return _Step(
            status, (EmitEvent("Normal", "ChampionReady", f"{champion.version} serves all traffic"),), 0
        )
    if health.state == RevisionState.FAILED and status.phase != Phase.FAILED:
        status.phase = Phase.FAILED
        return _Step(
            status, (EmitEvent("Warning", "ChampionFailed", f"{champion.version}: {health.message}"),), 0
        )
    if status.phase == Phase.PENDING and _overdue(context, status.phase_since):
        # Not ready by the deadline: say so; it still serves as soon as it becomes ready.
        status.phase = Phase.FAILED
        message = f"{champion.version}: not ready after {context.deployment.spec.rollout.progress_deadline}"
        return _Step(status, (EmitEvent("Warning", REASON_DEADLINE, message),), 0)
    return _Step(status, (), _until_overdue(context, status.phase_since))


def _idle(context: _Context, status: ModelDeploymentStatus) -> _Step:
    champion = _required(status.champion)
    if context.observations.health(champion.revision).state != RevisionState.READY:
        return _Step(status)
    offer = next((offer for offer in _offers(context, status) if _eligible(context, offer)), None)
    if offer is None:
        return _Step(status)
    revision = revision_name(context.name, offer.version)
    if revision == champion.revision:
        # The champion's own version in another quantization: a revision of its own beside it.
        slug = offer.artifact.quantization.lower().replace("_", "-")
        revision = revision_name(context.name, f"{offer.version}-{slug}")
    candidate = RevisionStatus(
        revision=revision,
        version=offer.version,
        candidate=offer.candidate,
        artifact=offer.artifact,
        since=context.stamp,
    )
    status.candidate, status.canary, status.canary_weight = candidate, None, 0
    status.phase, status.record = Phase.BENCHMARKING, []
    source = f"ModelCandidate {offer.candidate}" if offer.candidate else "spec.model"
    actions: list[Action] = [
        DeployRevision(candidate),
        _weights(context, status),
        EmitEvent(
            "Normal", "RolloutStarted", f"evaluating {offer.version} ({source}) against {champion.version}"
        ),
    ]
    if context.deployment.spec.analysis.ungated:
        message = f"{offer.version}: spec.analysis.ungated: no gate will judge it, only time and traffic"
        actions.append(EmitEvent("Warning", "Ungated", message))
    return _Step(status, tuple(actions), 0)


def _benchmarking(context: _Context, status: ModelDeploymentStatus) -> _Step:
    champion, candidate = _required(status.champion), _required(status.candidate)
    if not _still_offered(context, status, candidate):
        return _finish(context, status, _withdrawn(context, candidate), Phase.ROLLED_BACK)
    health = context.observations.health(candidate.revision)
    if health.state == RevisionState.FAILED:
        refused = Decision(
            verdict=Verdict.REJECT,
            gate=Gate.SANITY,
            candidate=candidate.version,
            reason=REASON_ARTIFACT_REFUSED,
            message=health.message or "the data plane refused the revision",
            time=context.stamp,
        )
        return _finish(context, status, refused, Phase.REJECTED)
    if _overdue(context, status.phase_since):
        stuck = Decision(
            verdict=Verdict.REJECT,
            gate=Gate.SANITY,
            candidate=candidate.version,
            reason=REASON_DEADLINE,
            message=(
                f"still {'benchmarking' if health.state == RevisionState.READY else 'loading'} after "
                f"{context.deployment.spec.rollout.progress_deadline}"
            ),
            time=context.stamp,
        )
        return _finish(context, status, stuck, Phase.REJECTED)
    ready = RevisionState.READY
    if health.state != ready or context.observations.health(champion.revision).state != ready:
        return _Step(status, (), _until_overdue(context, status.phase_since))
    benchmarks = tuple(reference.name for reference in context.deployment.spec.analysis.benchmarks)
    if not benchmarks:
        return _start_canary(context, status, None)
    offline = context.observations.offline
    if offline is None or offline.candidate != candidate.revision or offline.benchmarks != benchmarks:
        run = RunBenchmark(champion.revision, candidate.revision, benchmarks)
        return _Step(status, (run,), _until_overdue(context, status.phase_since))
    decision = offline.outcome.to_decision(candidate=candidate.version, time=context.stamp)
    match decision.verdict:
        case Verdict.PROMOTE:
            return _start_canary(context, status, decision)
        case Verdict.REJECT:
            return _finish(context, status, decision, Phase.REJECTED)
        case Verdict.INCONCLUSIVE:
            return _finish(context, status, decision, Phase.INCONCLUSIVE)
        case _:
            run = RunBenchmark(champion.revision, candidate.revision, benchmarks)
            return _Step(status, (run,), _until_overdue(context, status.phase_since))


def _start_canary(context: _Context, status: ModelDeploymentStatus, decision: Decision | None) -> _Step:
    steps = context.deployment.spec.rollout.steps
    status.phase = Phase.CANARY
    status.canary = CanaryStatus(step=0, steps=len(steps), step_started_at=context.stamp)
    status.canary_weight = steps[0].weight
    if decision is not None:
        status.last_decision = _record(status, decision)
    why = f"{decision.reason}: {decision.message}" if decision else "no benchmarks configured"
    event = EmitEvent(
        "Normal", "CanaryStarted", f"{_required(status.candidate).version}: {why}; {steps[0].weight}%"
    )
    return _Step(status, (_weights(context, status), event), 0)


def _canary(context: _Context, status: ModelDeploymentStatus) -> _Step:
    champion, candidate = _required(status.champion), _required(status.candidate)
    steps = context.deployment.spec.rollout.steps
    if not _still_offered(context, status, candidate):
        return _roll_back(context, status, _withdrawn(context, candidate))
    health = context.observations.health(candidate.revision)
    if health.state == RevisionState.FAILED:
        failed = Decision(
            verdict=Verdict.REJECT,
            gate=Gate.SANITY,
            candidate=candidate.version,
            reason=REASON_REVISION_FAILED,
            message=health.message or "the candidate revision stopped serving",
            time=context.stamp,
        )
        return _roll_back(context, status, failed)
    canary = status.canary or CanaryStatus(step=0, steps=len(steps), step_started_at=context.stamp)
    step = min(canary.step, len(steps) - 1)
    if (step, len(steps), steps[step].weight) != (canary.step, canary.steps, status.canary_weight):
        # The strategy changed under a running canary: keep the step, take its new weight.
        status.canary = CanaryStatus(step=step, steps=len(steps), step_started_at=canary.step_started_at)
        status.canary_weight = steps[step].weight
        message = f"{candidate.version}: step {step + 1}/{len(steps)} now at {steps[step].weight}%"
        return _Step(
            status, (_weights(context, status), EmitEvent("Normal", "CanaryStepsChanged", message)), 0
        )
    step_ends = parse_time(canary.step_started_at) + timedelta(seconds=parse_duration(steps[step].pause))
    observe = ObserveCanary(
        champion.revision, candidate.revision, step, canary.step_started_at, format_time(step_ends)
    )
    online = _sample_of(context, observe)
    window = _window(context, online, step_ends, steps[step].min_requests)
    verdict = step_verdict(online.outcome if online else None, window)
    if verdict.verdict == Verdict.CONTINUE:
        return _keep_watching(context, status, observe, step_ends)
    decision = verdict.to_decision(candidate=candidate.version, time=context.stamp)
    where = f"step {step + 1}/{len(steps)} at {steps[step].weight}%"
    decision = decision.model_copy(update={"message": f"{where}: {decision.message}"})
    if verdict.verdict != Verdict.PROMOTE:
        return _roll_back(context, status, decision)
    status.last_decision = _record(status, decision)
    if step + 1 < len(steps):
        status.canary = CanaryStatus(step=step + 1, steps=len(steps), step_started_at=context.stamp)
        status.canary_weight = steps[step + 1].weight
        message = f"{candidate.version}: {where} passed ({decision.reason}); now {steps[step + 1].weight}%"
        return _Step(status, (_weights(context, status), EmitEvent("Normal", "CanaryStepPassed", message)), 0)
    final = rollout_verdict(
        status.record,
        benchmarks=bool(context.deployment.spec.analysis.benchmarks),
        ungated=context.deployment.spec.analysis.ungated,
        candidate=candidate.version,
        time=context.stamp,
    )
    if final.verdict != Verdict.PROMOTE:
        return _roll_back(context, status, final)
    status.last_decision = _record(status, final)
    status.phase, status.canary_weight = Phase.PROMOTING, 100
    message = f"{candidate.version}: {final.reason}: {final.message}; moving all traffic"
    return _Step(status, (_weights(context, status), EmitEvent("Normal", "Promoting", message)), 0)


def _promoting(context: _Context, status: ModelDeploymentStatus) -> _Step:
    champion, candidate = _required(status.champion), _required(status.candidate)
    if context.observations.health(candidate.revision).state == RevisionState.FAILED:
        failed = Decision(
            verdict=Verdict.REJECT,
            gate=Gate.SANITY,
            candidate=candidate.version,
            reason=REASON_REVISION_FAILED,
            message=context.observations.health(candidate.revision).message,
            time=context.stamp,
        )
        return _roll_back(context, status, failed)
    desired = _weights(context, status)
    if not _applied(context, desired):
        return _Step(status, (desired,))
    decision = _required(status.last_decision)
    status.history = [_summary(decision), *status.history][:HISTORY_LIMIT]
    status.champion = candidate.model_copy(update={"since": context.stamp})
    status.candidate, status.canary, status.canary_weight = None, None, 0
    message = f"{candidate.version} replaced {champion.version}: {decision.reason}: {decision.message}"
    if parse_duration(context.deployment.spec.rollout.bake_time) > 0:
        status.phase, status.previous = Phase.BAKING, champion
        bake = f"{message}; {champion.version} stays loaded for {context.deployment.spec.rollout.bake_time}"
        return _Step(status, (_weights(context, status), EmitEvent("Normal", "Baking", bake)), 0)
    status.phase = Phase.PROMOTED
    return _Step(
        status,
        (
            _weights(context, status),
            RemoveRevision(champion.revision),
            EmitEvent("Normal", "Promoted", message),
        ),
        0,
    )


def _baking(context: _Context, status: ModelDeploymentStatus) -> _Step:
    """The new champion serves all traffic; the previous one answers mirrored copies, so the same
    online gates compare the two. A regression moves the traffic back; otherwise the bake ends."""
    champion, previous = _required(status.champion), _required(status.previous)
    ends = _required(bake_ends(context.deployment.spec, status))
    step = len(context.deployment.spec.rollout.steps)
    observe = ObserveCanary(
        previous.revision,
        champion.revision,
        step,
        _required(status.phase_since),
        format_time(ends),
        previous.revision,
    )
    online = _sample_of(context, observe)
    verdict = bake_verdict(online.outcome if online else None, _window(context, online, ends))
    if verdict.verdict == Verdict.CONTINUE:
        return _keep_watching(context, status, observe, ends)
    decision = verdict.to_decision(candidate=champion.version, time=context.stamp)
    decision = decision.model_copy(update={"message": f"bake against {previous.version}: {decision.message}"})
    if verdict.verdict == Verdict.REJECT:
        # Back to the previous champion: it takes the traffic again, the regressed one is removed.
        status.champion = previous.model_copy(update={"since": context.stamp})
        status.candidate, status.previous = champion, None
        return _roll_back(context, status, decision)
    _record(status, decision)
    status.phase, status.previous = Phase.PROMOTED, None
    event = EmitEvent(
        "Normal" if decision.reason == REASON_BAKE_PASSED else "Warning",
        decision.reason,
        f"{champion.version}: {decision.message}",
    )
    return _Step(status, (_weights(context, status), RemoveRevision(previous.revision), event), 0)


def _roll_back(context: _Context, status: ModelDeploymentStatus, decision: Decision) -> _Step:
    status.phase, status.canary, status.canary_weight = Phase.ROLLING_BACK, None, 0
    status.last_decision = _record(status, decision)
    message = f"{decision.candidate}: {decision.reason}: {decision.message}"
    return _Step(status, (_weights(context, status), EmitEvent("Warning", "RollingBack", message)), 0)


def _rolling_back(context: _Context, status: ModelDeploymentStatus) -> _Step:
    desired = _weights(context, status)
    if not _applied(context, desired):
        return _Step(status, (desired,))
    decision = _required(status.last_decision)
    final = Phase.INCONCLUSIVE if decision.verdict == Verdict.INCONCLUSIVE else Phase.ROLLED_BACK
    return _finish(context, status, decision, final)


def _finish(context: _Context, status: ModelDeploymentStatus, decision: Decision, phase: Phase) -> _Step:
    """End a rollout without promotion: the champion keeps all traffic and the candidate is removed.

    After a bake that found a regression the candidate is the version promoted before it, and the
    champion is the one it had replaced: the Event says that one serves again.
    """
    candidate = _required(status.candidate)
    decision = _stamped(status, decision)
    if not status.record or status.record[-1] != decision:
        _record(status, decision)
    baked = any(
        entry.candidate == candidate.version and entry.verdict == Verdict.PROMOTE for entry in status.history
    )
    outcome = f"{_required(status.champion).version} serves again" if baked else "champion unchanged"
    status.history = [_summary(decision), *status.history][:HISTORY_LIMIT]
    status.last_decision = decision
    status.candidate, status.canary, status.canary_weight = None, None, 0
    status.phase = phase
    event_type = "Normal" if decision.reason == REASON_WITHDRAWN else "Warning"
    message = f"{decision.candidate}: {decision.reason}: {decision.message}; {outcome}"
    return _Step(
        status,
        (
            _weights(context, status),
            RemoveRevision(candidate.revision),
            EmitEvent(event_type, str(phase), message),
        ),
        0,
    )


# --- helpers ------------------------------------------------------------------------------------


def _weights(context: _Context, status: ModelDeploymentStatus) -> SetWeights:
    return traffic_split(context.deployment.spec, status)


def _sample_of(context: _Context, observe: ObserveCanary) -> OnlineResult | None:
    """The shell's latest live sample of this window (one of another step or candidate is none)."""
    online = context.observations.online
    if online is None or (online.candidate, online.step) != (observe.candidate, observe.step):
        return None
    return online


def _window(context: _Context, online: OnlineResult | None, ends: datetime, min_requests: int = 0) -> Window:
    """Where a window that ends at `ends` stands; a sample covers it only if read after its end."""
    return Window(
        ended=online is not None and min(online.observed_at, context.now) >= ends,
        requests=online.candidate_requests if online else 0,
        min_requests=min_requests,
        overdue=_overdue(context, format_time(ends)),
    )


def _keep_watching(
    context: _Context, status: ModelDeploymentStatus, observe: ObserveCanary, ends: datetime
) -> _Step:
    # The shell samples a running window on its own cadence (and right after `until`); the requeue
    # only makes sure its end and its deadline are noticed even without a sample.
    wake = (ends - context.now).total_seconds()
    return _Step(status, (observe,), wake if wake > 0 else _until_overdue(context, format_time(ends)))


def _stamped(status: ModelDeploymentStatus, decision: Decision) -> Decision:
    """The decision with the quantization of the revision it is about (the candidate, or while
    baking the new champion): one version may be offered in several quantizations."""
    subject = status.candidate or status.champion
    if decision.quantization is not None or subject is None or subject.version != decision.candidate:
        return decision
    return decision.model_copy(update={"quantization": subject.artifact.quantization})


def _decides(decision: Decision, version: str, artifact: Artifact) -> bool:
    """Whether `decision` is about this version in this artifact's quantization (one recorded
    without a quantization is about every quantization of its version)."""
    return decision.candidate == version and decision.quantization in (None, artifact.quantization)


def _is(revision: RevisionStatus, version: str, artifact: Artifact) -> bool:
    """Whether a revision serves this version in this artifact's quantization."""
    return (revision.version, revision.artifact.quantization) == (version, artifact.quantization)


def _record(status: ModelDeploymentStatus, decision: Decision) -> Decision:
    """Add a decision to the rollout's record (bounded: the oldest entries after the first go)."""
    decision = _stamped(status, decision)
    status.record = [*status.record, decision]
    if len(status.record) > RECORD_LIMIT:
        status.record = [status.record[0], *status.record[len(status.record) - RECORD_LIMIT + 1 :]]
    return decision


def _summary(decision: Decision) -> Decision:
    """What the deployment's history keeps of a final decision: the evidence stays in the record."""
    return decision.model_copy(update={"evidence": []})


def _overdue(context: _Context, since: str | None) -> bool:
    """Whether more than the rollout's progress deadline has passed since `since` (RFC 3339)."""
    return since is not None and _until_overdue(context, since) == 0


def _until_overdue(context: _Context, since: str | None) -> float | None:
    """Seconds until the progress deadline counted from `since` passes (0 once it has)."""
    if since is None:
        return None
    deadline = parse_time(since) + timedelta(
        seconds=parse_duration(context.deployment.spec.rollout.progress_deadline)
    )
    return max(0.0, (deadline - context.now).total_seconds())


def _converge(
    context: _Context, status: ModelDeploymentStatus, taken: tuple[Action, ...]
) -> tuple[Action, ...]:
    """Repeat whatever data-plane action a crash may have lost: the data plane must match status."""
    if status.champion is None:
        return ()
    wanted = {
        revision.revision: revision
        for revision in (status.champion, status.candidate, status.previous)
        if revision is not None
    }
    running = set(context.observations.revisions)
    deploying = {action.revision.revision for action in taken if isinstance(action, DeployRevision)}
    removing = {action.revision for action in taken if isinstance(action, RemoveRevision)}
    repairs: list[Action] = [
        DeployRevision(wanted[name]) for name in sorted(set(wanted) - running - deploying)
    ]
    repairs += [RemoveRevision(name) for name in sorted(running - set(wanted) - removing)]
    desired = _weights(context, status)
    if not _applied(context, desired) and not any(isinstance(action, SetWeights) for action in taken):
        repairs.append(desired)
    return tuple(repairs)


def _applied(context: _Context, desired: SetWeights) -> bool:
    served = context.observations.served_weights
    if served is None:
        return True
    return all(served.get(revision, 0) == weight for revision, weight in desired.weights.items())


def _offers(context: _Context, status: ModelDeploymentStatus) -> list[Offer]:
    """Undecided versions offered to the deployment, oldest first (spec.model first).

    A version is offered once per quantization: the champion's own version in a cheaper one is a
    candidate like any other (judged with `analysis.requireGain`, it has to show the saving).
    """
    champion = _required(status.champion)
    offers: list[Offer] = []
    model = context.deployment.spec.model
    if not _is(champion, model.version, model.artifact) and champion.candidate is None:
        offers.append(Offer(model.version, model.artifact, None))
    for candidate in context.candidates:
        final = candidate.status is not None and candidate.status.phase in FINAL_CANDIDATE_PHASES
        if not final:
            offers.append(Offer(candidate.spec.version, candidate.spec.artifact, candidate.metadata.name))
    seen: set[tuple[str, str]] = set()
    unique = []
    for offer in offers:
        key = (offer.version, str(offer.artifact.quantization))
        decided = any(_decides(decision, offer.version, offer.artifact) for decision in status.history)
        if not decided and not _is(champion, offer.version, offer.artifact) and key not in seen:
            seen.add(key)
            unique.append(offer)
    return unique


def _eligible(context: _Context, offer: Offer) -> bool:
    return offer.candidate is None or _waiting_reason(context, _candidate(context, offer.candidate)) is None


def _waiting_reason(context: _Context, candidate: ModelCandidate | None) -> str | None:
    """Why a candidate may not start a rollout on its own, or None if it may."""
    if candidate is None:
        return "the candidate is gone"
    replacement = context.deployment.spec.replacement
    labels = candidate.metadata.labels
    mismatched = {
        key: value for key, value in replacement.candidate_selector.items() if labels.get(key) != value
    }
    if mismatched:
        return f"does not match the deployment's candidateSelector {mismatched}"
    approved = candidate.metadata.annotations.get(APPROVAL_ANNOTATION) == "true"
    if replacement.mode == ReplacementMode.MANUAL and not approved:
        return f'replacement is manual: waiting for annotation {APPROVAL_ANNOTATION}: "true"'
    return None


def _candidate(context: _Context, name: str) -> ModelCandidate | None:
    return next((candidate for candidate in context.candidates if candidate.metadata.name == name), None)


def _still_offered(context: _Context, status: ModelDeploymentStatus, candidate: RevisionStatus) -> bool:
    if candidate.candidate is None:
        model = context.deployment.spec.model
        return _is(candidate, model.version, model.artifact)
    found = _candidate(context, candidate.candidate)
    return found is not None and _is(candidate, found.spec.version, found.spec.artifact)


def _withdrawn(context: _Context, candidate: RevisionStatus) -> Decision:
    source = (
        f"ModelCandidate {candidate.candidate} was deleted" if candidate.candidate else "spec.model changed"
    )
    return Decision(
        verdict=Verdict.REJECT,
        gate=Gate.MANUAL,
        candidate=candidate.version,
        reason=REASON_WITHDRAWN,
        message=f"{source} during the rollout",
        time=context.stamp,
    )


def _required(value: _T | None) -> _T:
    if value is None:
        raise ValueError("status is inconsistent with its phase (a field the phase needs is missing)")
    return value


# --- status that follows from the transition ----------------------------------------------------


def _with_conditions(
    context: _Context, before: ModelDeploymentStatus, status: ModelDeploymentStatus
) -> ModelDeploymentStatus:
    generation = context.deployment.metadata.generation
    champion = status.champion
    health = context.observations.health(champion.revision) if champion else None
    wanted: list[tuple[str, ConditionStatus, str, str]] = []
    if health is None or health.state == RevisionState.LOADING:
        wanted.append(
            ("Ready", ConditionStatus.FALSE, "ChampionLoading", "the champion revision is starting")
        )
    elif health.state == RevisionState.READY:
        wanted.append(
            ("Ready", ConditionStatus.TRUE, "ChampionServing", f"{_required(champion).version} serves")
        )
    elif health.state == RevisionState.UNSCHEDULABLE:
        wanted.append(("Ready", ConditionStatus.FALSE, "Unschedulable", health.message or "the pool is full"))
    else:
        wanted.append(("Ready", ConditionStatus.FALSE, "ChampionFailed", health.message))
    if status.phase in ACTIVE_PHASES:
        wanted.append(
            ("Progressing", ConditionStatus.TRUE, str(status.phase), _progress_message(context, status))
        )
    else:
        wanted.append(("Progressing", ConditionStatus.FALSE, "NoRollout", ""))
    if health is not None and health.state == RevisionState.FAILED:
        wanted.append(("Degraded", ConditionStatus.TRUE, "ChampionFailed", health.message))
    else:
        wanted.append(("Degraded", ConditionStatus.FALSE, "AsExpected", ""))
    conditions = merge_conditions(before.conditions, wanted, generation, context.stamp)
    return status.model_copy(update={"conditions": conditions, "observed_generation": generation})


def merge_conditions(
    previous: Sequence[Condition],
    wanted: Sequence[tuple[str, ConditionStatus, str, str]],
    generation: int | None,
    stamp: str,
) -> list[Condition]:
    """Conditions (type, status, reason, message); lastTransitionTime moves only when the status does."""
    before = {condition.type: condition for condition in previous}
    conditions = []
    for kind, truth, reason, message in wanted:
        old = before.get(kind)
        since = old.last_transition_time if old is not None and old.status == truth else stamp
        conditions.append(
            Condition(
                type=kind,
                status=truth,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return conditions


def _progress_message(context: _Context, status: ModelDeploymentStatus) -> str:
    candidate = _required(status.champion if status.phase == Phase.BAKING else status.candidate)
    match status.phase:
        case Phase.BENCHMARKING:
            health = context.observations.health(candidate.revision)
            if health.state != RevisionState.READY:
                return f"{candidate.version}: revision {health.state.value.lower()} {health.message}".rstrip()
            return f"{candidate.version}: running the offline benchmarks"
        case Phase.CANARY:
            canary = _required(status.canary)
            step = f"{canary.step + 1}/{canary.steps}"
            return f"{candidate.version}: canary step {step} at {status.canary_weight}%"
        case Phase.PROMOTING:
            return f"{candidate.version}: moving all traffic to the candidate"
        case Phase.BAKING:
            previous = _required(status.previous)
            return (
                f"{candidate.version}: baking for {context.deployment.spec.rollout.bake_time}, "
                f"{previous.version} loaded and mirrored to roll back to"
            )
        case _:
            return f"{candidate.version}: moving all traffic back to the champion"


def _candidate_updates(
    context: _Context, before: ModelDeploymentStatus, status: ModelDeploymentStatus
) -> tuple[Action, ...]:
    """Bring every ModelCandidate's status in line with the deployment's (level-triggered, so crash-safe).

    A candidate gets the record of its rollout while the deployment still holds it: the record of
    this status or, after a crash right after a rollout ended, of the one before, if a new rollout
    has already begun.
    """
    active = status.candidate if status.phase != Phase.BAKING else status.champion
    updates: list[Action] = []
    for candidate in context.candidates:
        version, artifact, current = candidate.spec.version, candidate.spec.artifact, candidate.status
        record = next(
            (
                record
                for record in (status.record, before.record)
                if record and _decides(record[-1], version, artifact)
            ),
            None,
        )
        decision = next((entry for entry in status.history if _decides(entry, version, artifact)), None)
        if active is not None and active.candidate == candidate.metadata.name and active.version == version:
            phase, message, decision = status.phase, _progress_message(context, status), None
        elif decision is not None:
            # The history keeps summaries; the candidate gets the decision with its evidence, from
            # the deployment's record or, once the next rollout replaced that, from its own.
            known = record if record is not None else (current.record if current is not None else [])
            decision = next((entry for entry in reversed(known) if _summary(entry) == decision), decision)
            phase, message = candidate_phase(decision), f"{decision.reason}: {decision.message}"
        elif (current is not None and current.phase in FINAL_CANDIDATE_PHASES) or (
            status.champion is not None and _is(status.champion, version, artifact)
        ):
            continue
        else:
            phase, message = Phase.PENDING, _queue_message(context, status, candidate)
        wanted = tuple(record) if record is not None else None
        shown = tuple(current.record) if current is not None else ()
        if (
            current is None
            or (current.phase, current.message, current.decision)
            != (
                phase,
                message,
                decision,
            )
            or (wanted is not None and wanted != shown)
        ):
            updates.append(UpdateCandidateStatus(candidate.metadata.name, phase, message, decision, wanted))
    return tuple(updates)


def _queue_message(context: _Context, status: ModelDeploymentStatus, candidate: ModelCandidate) -> str:
    reason = _waiting_reason(context, candidate)
    if reason is not None:
        return reason
    if status.candidate is not None:
        return f"queued behind {status.candidate.version}"
    return "waiting for the champion to serve"
