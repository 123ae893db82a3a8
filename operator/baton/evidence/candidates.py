"""Writing a ModelCandidate's status: what the core decided about it, and its benchmark scores.

The status is the core's, level-triggered: `UpdateCandidateStatus` says the whole of phase,
message and decision, and a `None` decision clears the one shown. Keeping an older decision would
make the status differ from what the core computes, so the core would ask for the same update on
every reconcile, and a re-queued candidate would show a verdict that no longer holds; the audit
trail is the deployment's history and the decision Events, not a value a shell forgot to clear.
Scores are the one thing the core does not compute (the benchmark run measured them): they are
kept across updates until a new run replaces them.
"""

from __future__ import annotations

from baton.api.candidate import BenchmarkScore, ModelCandidateStatus
from baton.api.decision import Verdict
from baton.evidence.ports import Store
from baton.rollout import UpdateCandidateStatus


def apply_candidate_update(store: Store, update: UpdateCandidateStatus) -> ModelCandidateStatus | None:
    """Write the status the core asked for, with an Event for a decision; None if the candidate is gone."""
    candidate = store.candidate(update.candidate)
    if candidate is None:
        return None
    previous = candidate.status or ModelCandidateStatus()
    status = ModelCandidateStatus(
        observed_generation=candidate.metadata.generation,
        phase=update.phase,
        message=update.message,
        decision=update.decision,
        record=list(update.record) if update.record is not None else previous.record,
        scores=previous.scores,
    )
    store.write_candidate_status(update.candidate, status)
    # One Event per decision: a later update that only completes the record repeats it.
    if update.decision is not None and update.decision != previous.decision:
        store.event(
            ("ModelCandidate", update.candidate),
            "Normal" if update.decision.verdict == Verdict.PROMOTE else "Warning",
            update.decision.reason,
            update.decision.message,
        )
    return status


def record_scores(store: Store, name: str, scores: list[BenchmarkScore]) -> None:
    """Put a benchmark run's scores on the candidate's status, next to the decision they led to."""
    candidate = store.candidate(name)
    if candidate is None or not scores:
        return
    previous = candidate.status or ModelCandidateStatus()
    store.write_candidate_status(name, previous.model_copy(update={"scores": scores}))
