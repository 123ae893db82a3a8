"""The decision module: how gates combine and what a step, a rollout and a bake conclude."""

from __future__ import annotations

import pytest

from baton.analysis.decision import Window, bake_verdict, decide, rollout_verdict, step_verdict
from baton.analysis.measurements import Measurement, PairedScores
from baton.analysis.offline import OfflinePolicy, offline_gate
from baton.analysis.outcome import GateOutcome
from baton.analysis.sanity import threshold_gate
from baton.api.decision import Decision, Gate, Verdict

pytestmark = pytest.mark.unit

PASSING_BENCHMARK = PairedScores(
    item_ids=tuple(f"q{index}" for index in range(200)),
    champion=(0.0,) * 100 + (1.0,) * 100,
    candidate=(1.0,) * 200,
    groups=(None,) * 200,
    n_errors=0,
    n_attempted=400,
)
TIME = "2026-05-29T06:00:00Z"


def promoting_gate() -> GateOutcome:
    outcome = offline_gate(PASSING_BENCHMARK, OfflinePolicy(benchmark="medical-qa"))
    assert outcome.verdict == Verdict.PROMOTE
    return outcome


def online(verdict: Verdict, reason: str = "Reason") -> GateOutcome:
    return GateOutcome(verdict, Gate.ONLINE, reason, f"{verdict} by test")


def test_no_gate_evaluated_is_inconclusive() -> None:
    assert decide([]).verdict == Verdict.INCONCLUSIVE


def test_one_failing_metric_vetoes_and_is_not_averaged_away() -> None:
    slow = threshold_gate("p99-latency", Measurement(query="p99", value=3.2), max_value=2.0)
    decision = decide([promoting_gate(), promoting_gate(), promoting_gate(), slow])
    assert (decision.verdict, decision.reason) == (Verdict.REJECT, "ThresholdBreached")
    assert len(decision.evidence) == 4  # the deciding gate first, then all the others


def test_reject_outranks_inconclusive_and_only_unanimous_passes_promote() -> None:
    missing = threshold_gate("error-rate", Measurement(query="q", value=None), max_value=0.01)
    slow = threshold_gate("p99-latency", Measurement(query="p99", value=3.2), max_value=2.0)
    assert decide([missing, slow]).verdict == Verdict.REJECT
    assert decide([promoting_gate(), missing]).verdict == Verdict.INCONCLUSIVE
    assert decide([promoting_gate(), promoting_gate()]).verdict == Verdict.PROMOTE


def test_outcome_becomes_a_valid_status_decision() -> None:
    wire = decide([promoting_gate()]).to_decision(candidate="medical-v2", time=TIME).to_wire()
    assert (wire["verdict"], wire["gate"], wire["evidence"][0]["test"]) == (
        "Promote",
        "offline",
        "mcnemar-exact",
    )
    assert wire["evidence"][0]["nCandidate"] == 200 and wire["evidence"][0]["pValue"] < 0.05


@pytest.mark.parametrize(
    ("outcome", "window", "verdict"),
    [
        (online(Verdict.REJECT), Window(ended=False), Verdict.REJECT),  # a violation ends it at once
        (online(Verdict.PROMOTE), Window(ended=False), Verdict.CONTINUE),  # the pause is a minimum
        (online(Verdict.PROMOTE), Window(ended=True, requests=4, min_requests=5), Verdict.CONTINUE),
        (online(Verdict.PROMOTE), Window(ended=True, requests=5, min_requests=5), Verdict.PROMOTE),
        (online(Verdict.CONTINUE), Window(ended=True), Verdict.CONTINUE),  # still collecting: wait
        (online(Verdict.CONTINUE), Window(ended=True, overdue=True), Verdict.INCONCLUSIVE),
        (online(Verdict.INCONCLUSIVE), Window(ended=False), Verdict.CONTINUE),  # one failed read
        (online(Verdict.INCONCLUSIVE), Window(ended=True), Verdict.INCONCLUSIVE),
        (None, Window(ended=True), Verdict.CONTINUE),
        (None, Window(ended=True, overdue=True), Verdict.INCONCLUSIVE),
        (
            online(Verdict.PROMOTE),
            Window(ended=True, requests=1, min_requests=5, overdue=True),
            Verdict.INCONCLUSIVE,
        ),
    ],
)
def test_a_step_passes_only_on_evidence_and_never_by_time(outcome, window, verdict) -> None:
    assert step_verdict(outcome, window).verdict == verdict


def decision(gate: Gate, verdict: Verdict = Verdict.PROMOTE, reason: str = "Passed") -> Decision:
    return Decision(verdict=verdict, gate=gate, candidate="v2", reason=reason, time=TIME)


@pytest.mark.parametrize(
    ("record", "benchmarks", "ungated", "verdict", "reason"),
    [
        ([decision(Gate.OFFLINE), decision(Gate.ONLINE)], True, False, Verdict.PROMOTE, "AllGatesPassed"),
        ([decision(Gate.ONLINE)], True, False, Verdict.INCONCLUSIVE, "OfflineGateNotRun"),
        ([decision(Gate.OFFLINE)], True, False, Verdict.INCONCLUSIVE, "NoCanaryStep"),
        ([decision(Gate.ONLINE)], False, True, Verdict.PROMOTE, "Ungated"),
        (
            [decision(Gate.OFFLINE), decision(Gate.ONLINE, Verdict.CONTINUE, "CollectingSamples")],
            True,
            False,
            Verdict.INCONCLUSIVE,
            "CollectingSamples",
        ),
    ],
)
def test_the_rollout_promotes_only_if_every_configured_gate_passed(
    record, benchmarks, ungated, verdict, reason
):
    final = rollout_verdict(record, benchmarks=benchmarks, ungated=ungated, candidate="v2", time=TIME)
    assert (final.verdict, final.reason) == (verdict, reason)


def test_a_bake_rolls_back_on_a_regression_and_says_when_it_could_not_watch() -> None:
    assert bake_verdict(online(Verdict.REJECT), Window(ended=False)).verdict == Verdict.REJECT
    assert bake_verdict(online(Verdict.PROMOTE), Window(ended=False)).verdict == Verdict.CONTINUE
    passed = bake_verdict(online(Verdict.PROMOTE), Window(ended=True))
    assert (passed.verdict, passed.reason) == (Verdict.PROMOTE, "BakePassed")
    blind = bake_verdict(online(Verdict.CONTINUE), Window(ended=True))
    assert (blind.verdict, blind.reason) == (Verdict.PROMOTE, "BakeUnobserved")
    assert bake_verdict(None, Window(ended=False, overdue=True)).reason == "BakeUnobserved"
