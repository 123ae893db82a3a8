"""The champion's own version in another quantization is a rollout like any other version.

Each (version, quantization) is offered, served as a revision of its own beside the champion and
decided once; the decision says which quantization it was about, so one rejected quantization of
a version never decides another.
"""

from __future__ import annotations

import pytest

from baton.api import ModelCandidate, Phase, Verdict
from baton.api.decision import Gate
from baton.rollout import Observations, OfflineResult, OnlineResult, RemoveRevision, UpdateCandidateStatus
from tests.unit.rollout.helpers import (
    CHAMPION,
    DIGEST,
    SAMPLES_READ_AT,
    actions_of,
    advance,
    candidate,
    healthy,
    in_phase,
    later,
    observe,
    outcome,
)

pytestmark = pytest.mark.unit


def requantized(
    quantization: str, *, version: str = "v1", created: str = "2026-11-29T05:00:00Z"
) -> ModelCandidate:
    """A ModelCandidate of `version` in `quantization`, named as a ModelSource names it."""
    base = candidate(version, created=created)
    name = f"medical-{version}-{quantization.lower().replace('_', '-')}"
    digest = DIGEST[:-2] + {"Q4_K_M": "b4", "TQ2_0": "c2", "Q8_0": "aa"}[quantization]
    artifact = base.spec.artifact.model_copy(update={"quantization": quantization, "digest": digest})
    return base.model_copy(
        update={
            "metadata": base.metadata.model_copy(update={"name": name}),
            "spec": base.spec.model_copy(update={"artifact": artifact}),
        }
    )


def offline(revision: str, verdict: Verdict) -> Observations:
    return Observations(
        revisions=healthy(CHAMPION, revision),
        offline=OfflineResult(revision, ("medical-qa",), outcome(verdict)),
    )


def test_the_champions_version_in_a_cheaper_quantization_gets_a_revision_of_its_own() -> None:
    resource = in_phase(Phase.SERVING)
    _, result = advance(resource, [requantized("Q4_K_M")], observe(healthy(CHAMPION)))
    status = result.status
    assert status.phase == Phase.BENCHMARKING
    assert (status.candidate.version, status.candidate.revision) == ("v1", "medical-v1-q4-k-m")
    assert status.champion.revision == CHAMPION and status.candidate.revision != status.champion.revision


def test_the_champions_version_in_its_own_quantization_is_never_offered() -> None:
    resource = in_phase(Phase.SERVING)
    _, result = advance(resource, [requantized("Q8_0")], observe(healthy(CHAMPION)))
    assert result.status.phase == Phase.SERVING and result.status.candidate is None


def test_a_rejected_quantization_decides_only_itself_and_the_next_one_is_offered() -> None:
    resource = in_phase(Phase.SERVING)
    offers = [requantized("TQ2_0"), requantized("Q4_K_M", created="2026-11-29T05:00:01Z")]
    resource, _ = advance(resource, offers, observe(healthy(CHAMPION)))
    assert resource.status.candidate.revision == "medical-v1-tq2-0"
    resource, result = advance(resource, offers, offline("medical-v1-tq2-0", Verdict.REJECT))
    (decision,) = resource.status.history
    assert (decision.candidate, decision.quantization, decision.verdict) == ("v1", "TQ2_0", Verdict.REJECT)
    updates = {update.candidate: update for update in actions_of(result, UpdateCandidateStatus)}
    assert updates["medical-v1-tq2-0"].phase == Phase.REJECTED
    assert updates["medical-v1-q4-k-m"].phase == Phase.PENDING  # not decided by its sibling's verdict
    # The rejected candidate's own status is not written yet (a crash): the history alone decides.
    resource, result = advance(resource, offers, observe(healthy(CHAMPION)))
    assert resource.status.phase == Phase.BENCHMARKING
    assert resource.status.candidate.revision == "medical-v1-q4-k-m"
    updates = {update.candidate: update.phase for update in actions_of(result, UpdateCandidateStatus)}
    assert updates == {"medical-v1-tq2-0": Phase.REJECTED, "medical-v1-q4-k-m": Phase.BENCHMARKING}


def test_a_promoted_quantization_becomes_the_champion_and_its_decisions_name_it() -> None:
    resource = in_phase(Phase.SERVING)
    offers, revision = [requantized("Q4_K_M")], "medical-v1-q4-k-m"
    resource, _ = advance(resource, offers, observe(healthy(CHAMPION)))
    resource, _ = advance(resource, offers, offline(revision, Verdict.PROMOTE))
    for step in range(3):
        online = OnlineResult(revision, step, 100, outcome(Verdict.PROMOTE, Gate.ONLINE), SAMPLES_READ_AT)
        observations = Observations(revisions=healthy(CHAMPION, revision), online=online)
        resource, _ = advance(resource, offers, observations, later(31 * (step + 1)))
    assert resource.status.phase == Phase.PROMOTING
    served = Observations(revisions=healthy(CHAMPION, revision), served_weights={revision: 100})
    resource, result = advance(resource, offers, served, later(200))
    status = resource.status
    assert status.phase == Phase.PROMOTED
    assert (status.champion.version, status.champion.artifact.quantization) == ("v1", "Q4_K_M")
    assert {decision.quantization for decision in status.record} == {"Q4_K_M"}
    assert (status.history[0].verdict, status.history[0].quantization) == (Verdict.PROMOTE, "Q4_K_M")
    assert RemoveRevision(CHAMPION) in result.actions
