"""The decisions a rollout acts on, in one place: how gates combine, when a canary step passes,
when a rollout may promote and what a bake concluded.

The gates (`baton.analysis.gates`) say what each configured gate shows on the evidence so far;
this module turns that into the verdict the state machine acts on, which only moves phases.
Everything here fails closed: missing or broken evidence is `Inconclusive`, waiting for evidence
is `Continue` and never turns into a pass on its own, and `Promote` needs every configured gate
passed on at least `minSamples` valid samples per arm. This is argo-rollouts' `assessMetricStatus`
idea as plain functions, with the step and the deadline made explicit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from baton.analysis.outcome import GateOutcome
from baton.api.decision import Decision, Gate, Verdict

# Worst first: a Reject anywhere beats missing evidence, which beats waiting, which beats a pass.
_SEVERITY = (Verdict.REJECT, Verdict.INCONCLUSIVE, Verdict.CONTINUE, Verdict.PROMOTE)
_MAX_EVIDENCE = 16
REASON_ALL_GATES_PASSED = "AllGatesPassed"
REASON_UNGATED = "Ungated"
REASON_DEADLINE = "ProgressDeadlineExceeded"
REASON_BAKE_PASSED = "BakePassed"
REASON_BAKE_UNOBSERVED = "BakeUnobserved"


def decide(outcomes: Sequence[GateOutcome]) -> GateOutcome:
    """The overall verdict: the most severe gate outcome, carrying the evidence of every gate."""
    if not outcomes:
        return GateOutcome(
            Verdict.INCONCLUSIVE,
            Gate.SANITY,
            "NoMetricsConfigured",
            "no gate was evaluated: nothing to decide on",
        )
    deciding = min(outcomes, key=lambda outcome: _SEVERITY.index(Verdict(outcome.verdict)))
    evidence = list(deciding.evidence)
    for outcome in outcomes:
        if outcome is not deciding:
            evidence.extend(outcome.evidence)
    return GateOutcome(
        deciding.verdict, deciding.gate, deciding.reason, deciding.message, tuple(evidence[:_MAX_EVIDENCE])
    )


@dataclass(frozen=True)
class Window:
    """Where a canary step (or the bake) stands when its latest samples are judged.

    `ended`: those samples were read after the step's pause (or the bake time) ended, so they cover
    all of it; `requests`/`min_requests`: the candidate's requests in the step and the step's quota;
    `overdue`: the pause ended more than the rollout's progress deadline ago.
    """

    ended: bool
    requests: int = 0
    min_requests: int = 0
    overdue: bool = False


def step_verdict(online: GateOutcome | None, window: Window) -> GateOutcome:
    """What a canary step concludes from its latest samples (None: none read yet in this step).

    `Continue`: keep observing. `Promote`: the step passed. `Reject`, `Inconclusive`: the rollout ends.
    A violation ends the step at once. It passes only after its pause, with its request quota and
    every online gate passed on at least `minSamples` per arm; short of that it waits, and once the
    progress deadline is overdue it is `Inconclusive`: lack of traffic is never a pass.
    """
    if online is not None and online.verdict == Verdict.REJECT:
        return online
    quota = window.requests >= window.min_requests
    if online is not None and window.ended and quota and online.verdict != Verdict.CONTINUE:
        return online
    if not window.overdue:
        return GateOutcome(Verdict.CONTINUE, Gate.ONLINE, "CollectingSamples", "the step is still running")
    if online is None:
        return GateOutcome(Verdict.INCONCLUSIVE, Gate.SANITY, "NoSamples", "no live sample was read")
    if not quota:
        return GateOutcome(
            Verdict.INCONCLUSIVE,
            Gate.SANITY,
            "TooFewRequests",
            f"{window.requests} candidate requests, {window.min_requests} needed",
            online.evidence,
        )
    return GateOutcome(
        Verdict.INCONCLUSIVE,
        online.gate,
        "TooFewSamples",
        f"not enough evidence: {online.message}",
        online.evidence,
    )


def rollout_verdict(
    record: Sequence[Decision], *, benchmarks: bool, ungated: bool, candidate: str, time: str
) -> Decision:
    """The final decision once the last canary step passed: Promote only if every configured gate did.

    `record` holds this rollout's decisions (the offline gate's when `benchmarks` are configured,
    then one per canary step). An ungated deployment promotes on its steps alone, and says so.
    """
    offline = [decision for decision in record if decision.gate in (Gate.OFFLINE, Gate.SANITY)]
    steps = [decision for decision in record if decision.gate == Gate.ONLINE]
    failed = [decision for decision in record if decision.verdict != Verdict.PROMOTE]
    if failed:
        reason, message = failed[0].reason, failed[0].message
        verdict = Verdict.INCONCLUSIVE if failed[0].verdict != Verdict.REJECT else Verdict.REJECT
    elif benchmarks and not offline:
        verdict, reason, message = Verdict.INCONCLUSIVE, "OfflineGateNotRun", "no offline decision recorded"
    elif not steps:
        verdict, reason, message = Verdict.INCONCLUSIVE, "NoCanaryStep", "no canary step recorded"
    elif ungated:
        verdict, reason = Verdict.PROMOTE, REASON_UNGATED
        message = f"spec.analysis.ungated: promoted on time and traffic alone after {len(steps)} canary steps"
    else:
        verdict, reason = Verdict.PROMOTE, REASON_ALL_GATES_PASSED
        gates = [f"offline {offline[-1].reason}"] if offline else []
        message = "; ".join([*gates, f"{len(steps)} canary steps passed ({steps[-1].reason})"])
    evidence = [item for decision in (*offline[-1:], *steps[-1:]) for item in decision.evidence]
    return Decision(
        verdict=verdict,
        gate=Gate.ONLINE if steps else Gate.SANITY,
        candidate=candidate,
        reason=reason,
        message=message,
        time=time,
        evidence=evidence[:_MAX_EVIDENCE],
    )


def bake_verdict(online: GateOutcome | None, window: Window) -> GateOutcome:
    """What the bake after a promotion concludes: `Reject` rolls back to the previous champion,
    `Promote` keeps the new one, `Continue` keeps watching.

    The promotion was decided on evidence already; the bake only looks for a regression. A bake
    that could not compare the two (too few mirrored samples, a failed reading) keeps the promotion
    and says so (`BakeUnobserved`), so that the lack of a watch is visible, never silent.
    """
    if online is not None and online.verdict == Verdict.REJECT:
        return online
    if not (window.ended and online is not None) and not window.overdue:
        return GateOutcome(Verdict.CONTINUE, Gate.ONLINE, "Baking", "the bake is still running")
    if online is not None and online.verdict == Verdict.PROMOTE:
        return GateOutcome(
            Verdict.PROMOTE,
            Gate.ONLINE,
            REASON_BAKE_PASSED,
            f"no regression: {online.message}",
            online.evidence,
        )
    why = online.message if online is not None else "no live sample was read"
    return GateOutcome(
        Verdict.PROMOTE,
        Gate.ONLINE,
        REASON_BAKE_UNOBSERVED,
        f"the bake could not compare the two revisions: {why}",
        online.evidence if online is not None else (),
    )
