"""Every transition of the rollout state machine, driven through its public `reconcile` only."""

from __future__ import annotations

from datetime import timedelta

import pytest

from baton.analysis.outcome import GateOutcome
from baton.api import ModelPool, Phase, Verdict
from baton.api.decision import Evidence, Gate
from baton.rollout import (
    APPROVAL_ANNOTATION,
    DeployRevision,
    EmitEvent,
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RemoveRevision,
    RunBenchmark,
    SetWeights,
    UpdateCandidateStatus,
    format_time,
    parse_duration,
    parse_time,
    revision_name,
)
from baton.rollout.model import RevisionState
from baton.rollout.render import render_pool
from tests.unit.rollout.helpers import (
    CANDIDATE,
    CHAMPION,
    NOW,
    actions_of,
    advance,
    candidate,
    deployment,
    deployment_doc,
    healthy,
    in_phase,
    later,
    observe,
)

pytestmark = pytest.mark.unit


def test_a_new_deployment_declares_its_champion_from_spec() -> None:
    _, result = advance(deployment(), [], observe({}))
    status = result.status
    assert (status.phase, status.champion.revision, status.champion.version) == (
        Phase.PENDING,
        CHAMPION,
        "v1",
    )
    assert actions_of(result, DeployRevision)[0].revision.revision == CHAMPION
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100})]
    assert result.requeue_after == 0
    assert status.observed_generation == 1
    ready = {condition.type: condition for condition in status.conditions}["Ready"]
    assert (ready.status, ready.reason, ready.observed_generation) == ("False", "ChampionLoading", 1)


@pytest.mark.parametrize(
    ("state", "phase", "event", "ready", "degraded"),
    [
        (RevisionState.READY, Phase.SERVING, "ChampionReady", "True", "False"),
        (RevisionState.FAILED, Phase.FAILED, "ChampionFailed", "False", "True"),
        (RevisionState.LOADING, Phase.PENDING, None, "False", "False"),
        (RevisionState.UNSCHEDULABLE, Phase.PENDING, None, "False", "False"),
    ],
)
def test_pending_champion_follows_data_plane_health(state, phase, event, ready, degraded) -> None:
    resource, _ = advance(deployment(), [], observe({}))
    _, result = advance(resource, [], observe(healthy(CHAMPION, state=state, message="why")))
    assert result.status.phase == phase
    assert [action.reason for action in actions_of(result, EmitEvent)] == ([event] if event else [])
    conditions = {condition.type: condition.status for condition in result.status.conditions}
    assert (conditions["Ready"], conditions["Degraded"]) == (ready, degraded)


def test_a_failed_champion_is_replaced_directly_when_spec_model_changes() -> None:
    resource, _ = advance(deployment(), [], observe({}))
    resource, _ = advance(resource, [], observe(healthy(CHAMPION, state=RevisionState.FAILED)))
    assert resource.status.phase == Phase.FAILED
    fixed = deployment(
        resource.status,
        model={
            "version": "v1b",
            "artifact": {"uri": "/m/v1b.gguf", "digest": "sha256:" + "b" * 64, "quantization": "Q8_0"},
        },
    )
    _, result = advance(fixed, [], observe({}))
    assert (result.status.phase, result.status.champion.version) == (Phase.PENDING, "v1b")
    assert RemoveRevision(CHAMPION) in result.actions


def test_serving_with_an_automatic_candidate_starts_benchmarking() -> None:
    resource = in_phase(Phase.SERVING)
    _, result = advance(resource, [candidate()], observe(healthy(CHAMPION)))
    status = result.status
    assert (status.phase, status.candidate.revision, status.candidate.candidate) == (
        Phase.BENCHMARKING,
        CANDIDATE,
        "medical-v2",
    )
    assert actions_of(result, DeployRevision)[0].revision.revision == CANDIDATE
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100, CANDIDATE: 0})]
    assert actions_of(result, UpdateCandidateStatus)[0].phase == Phase.BENCHMARKING
    assert {c.type: c.status for c in status.conditions}["Progressing"] == "True"


def test_shadow_strategy_mirrors_traffic_while_benchmarking() -> None:
    resource = in_phase(Phase.SERVING, rollout={"shadow": True})
    _, result = advance(resource, [candidate()], observe(healthy(CHAMPION)))
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100, CANDIDATE: 0}, shadow=CANDIDATE)]


@pytest.mark.parametrize(
    ("replacement", "labels", "annotations", "starts", "message_part"),
    [
        ({"mode": "manual"}, {}, {}, False, "waiting for annotation"),
        ({"mode": "manual"}, {}, {APPROVAL_ANNOTATION: "true"}, True, ""),
        ({"candidateSelector": {"team": "med"}}, {"team": "other"}, {}, False, "candidateSelector"),
        ({"candidateSelector": {"team": "med"}}, {"team": "med"}, {}, True, ""),
    ],
)
def test_replacement_policy_gates_the_start(replacement, labels, annotations, starts, message_part) -> None:
    resource = in_phase(Phase.SERVING, replacement=replacement)
    offered = candidate(labels=labels, annotations=annotations)
    _, result = advance(resource, [offered], observe(healthy(CHAMPION)))
    assert (result.status.phase == Phase.BENCHMARKING) is starts
    update = actions_of(result, UpdateCandidateStatus)[0]
    if not starts:
        assert update.phase == Phase.PENDING and message_part in update.message
        assert not actions_of(result, DeployRevision)


def test_no_rollout_starts_while_the_champion_is_not_ready() -> None:
    resource = in_phase(Phase.SERVING)
    _, result = advance(resource, [candidate()], observe(healthy(CHAMPION, state=RevisionState.LOADING)))
    assert result.status.phase == Phase.SERVING and result.status.candidate is None


@pytest.mark.parametrize("state", [RevisionState.LOADING, RevisionState.UNSCHEDULABLE])
def test_benchmarking_waits_for_the_candidate_revision(state) -> None:
    resource = in_phase(Phase.BENCHMARKING)
    observations = observe({**healthy(CHAMPION), **healthy(CANDIDATE, state=state)})
    _, result = advance(resource, [candidate()], observations)
    assert result.status == resource.status.model_copy(update={"conditions": result.status.conditions})
    assert not actions_of(result, RunBenchmark)
    assert result.requeue_after == pytest.approx(600)  # the progress deadline is noticed without an event


def test_a_refused_candidate_artifact_fails_the_candidate_never_the_champion() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    observations = observe(
        {**healthy(CHAMPION), **healthy(CANDIDATE, state=RevisionState.FAILED, message="sha256 mismatch")}
    )
    _, result = advance(resource, [candidate()], observations)
    status = result.status
    assert (status.phase, status.champion.version, status.candidate) == (Phase.REJECTED, "v1", None)
    assert status.history[0].reason == "ArtifactRefused" and "sha256 mismatch" in status.history[0].message
    assert RemoveRevision(CANDIDATE) in result.actions
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100})]
    update = actions_of(result, UpdateCandidateStatus)[0]
    assert (update.phase, update.decision.reason) == (Phase.FAILED, "ArtifactRefused")
    assert actions_of(result, EmitEvent)[0].type == "Warning"


def test_benchmarking_asks_for_a_benchmark_until_a_result_arrives() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    for offline in (None, Verdict.CONTINUE):
        _, result = advance(resource, [candidate()], observe(offline=offline))
        assert actions_of(result, RunBenchmark) == [RunBenchmark(CHAMPION, CANDIDATE, ("medical-qa",))]
        assert result.status.phase == Phase.BENCHMARKING


@pytest.mark.parametrize(
    ("verdict", "phase", "candidate_phase", "weights"),
    [
        (Verdict.PROMOTE, Phase.CANARY, Phase.CANARY, {CHAMPION: 90, CANDIDATE: 10}),
        (Verdict.REJECT, Phase.REJECTED, Phase.REJECTED, {CHAMPION: 100}),
        (Verdict.INCONCLUSIVE, Phase.INCONCLUSIVE, Phase.INCONCLUSIVE, {CHAMPION: 100}),
    ],
)
def test_offline_verdicts(verdict, phase, candidate_phase, weights) -> None:
    resource = in_phase(Phase.BENCHMARKING)
    _, result = advance(resource, [candidate()], observe(offline=verdict))
    assert result.status.phase == phase
    assert result.status.last_decision.verdict == verdict and result.status.last_decision.gate == Gate.OFFLINE
    assert actions_of(result, SetWeights) == [SetWeights(weights)]
    assert actions_of(result, UpdateCandidateStatus)[0].phase == candidate_phase
    assert result.status.champion.version == "v1"
    if phase != Phase.CANARY:
        assert result.status.history[0].verdict == verdict and RemoveRevision(CANDIDATE) in result.actions


def test_a_changed_benchmark_list_makes_an_earlier_result_stale() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    changed = deployment(
        resource.status, analysis={"benchmarks": [{"name": "medical-qa"}, {"name": "med-json"}]}
    )
    _, result = advance(changed, [candidate()], observe(offline=Verdict.PROMOTE))
    assert result.status.phase == Phase.BENCHMARKING
    assert actions_of(result, RunBenchmark) == [RunBenchmark(CHAMPION, CANDIDATE, ("medical-qa", "med-json"))]


def test_without_benchmarks_the_canary_starts_after_the_revision_is_ready() -> None:
    resource = in_phase(
        Phase.BENCHMARKING, analysis={"benchmarks": [], "metrics": [{"name": "errors", "kind": "errorRate"}]}
    )
    _, result = advance(resource, [candidate()], observe())
    assert (result.status.phase, result.status.canary_weight) == (Phase.CANARY, 10)
    assert not actions_of(result, RunBenchmark)


def test_canary_waits_for_its_pause_and_asks_for_live_samples() -> None:
    resource = in_phase(Phase.CANARY)
    _, result = advance(resource, [candidate()], observe(), later(10))
    started = resource.status.canary.step_started_at
    step_ends = format_time(parse_time(started) + timedelta(seconds=30))
    assert actions_of(result, ObserveCanary) == [ObserveCanary(CHAMPION, CANDIDATE, 0, started, step_ends)]
    assert result.requeue_after == pytest.approx(20)
    _, result = advance(resource, [candidate()], observe(online=Verdict.CONTINUE), later(10))
    assert result.status.canary.step == 0 and result.requeue_after == pytest.approx(20)


def test_a_step_ends_only_on_samples_read_after_its_pause() -> None:
    resource = in_phase(Phase.CANARY)
    step_ends = parse_time(resource.status.canary.step_started_at) + timedelta(seconds=30)
    early = observe(online=Verdict.PROMOTE, read_at=step_ends - timedelta(seconds=1))
    _, result = advance(resource, [candidate()], early, later(31))
    assert (result.status.canary.step, result.status.canary_weight) == (0, 10)
    assert [action.until for action in actions_of(result, ObserveCanary)] == [format_time(step_ends)]
    # The shell calls again once the closing sample is in; the requeue only guards the deadline.
    assert result.requeue_after == pytest.approx(599)
    on_time = observe(online=Verdict.PROMOTE, read_at=step_ends)
    _, result = advance(resource, [candidate()], on_time, later(31))
    assert (result.status.canary.step, result.status.canary_weight) == (1, 50)


@pytest.mark.parametrize(
    ("elapsed", "requests", "verdict", "phase", "step", "weight"),
    [
        (31, 100, Verdict.PROMOTE, Phase.CANARY, 1, 50),  # every online gate passed on minSamples
        (31, 100, Verdict.CONTINUE, Phase.CANARY, 0, 10),  # still collecting: never a pass, keep waiting
        (31, 2, Verdict.PROMOTE, Phase.CANARY, 0, 10),  # too few candidate requests
        (631, 100, Verdict.CONTINUE, Phase.ROLLING_BACK, None, 0),  # past the deadline: Inconclusive
        (631, 2, Verdict.PROMOTE, Phase.ROLLING_BACK, None, 0),  # no traffic by the deadline either
        (5, 100, Verdict.REJECT, Phase.ROLLING_BACK, None, 0),  # a violation stops the canary at once
        (5, 100, Verdict.INCONCLUSIVE, Phase.CANARY, 0, 10),  # mid-step: keep collecting
        (31, 100, Verdict.INCONCLUSIVE, Phase.ROLLING_BACK, None, 0),  # end of step: not enough evidence
    ],
)
def test_canary_step_outcomes(elapsed, requests, verdict, phase, step, weight) -> None:
    resource = in_phase(Phase.CANARY)
    _, result = advance(resource, [candidate()], observe(online=verdict, requests=requests), later(elapsed))
    status = result.status
    assert (status.phase, status.canary.step if status.canary else None, status.canary_weight) == (
        phase,
        step,
        weight,
    )
    if phase == Phase.ROLLING_BACK:
        assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100, CANDIDATE: 0})]
        # a step that ran out of time without its evidence ends Inconclusive, whatever it last saw
        ended = verdict if verdict in (Verdict.REJECT, Verdict.INCONCLUSIVE) else Verdict.INCONCLUSIVE
        assert status.last_decision.verdict == ended and status.champion.version == "v1"


def test_an_online_result_for_another_step_is_ignored() -> None:
    resource = in_phase(Phase.CANARY)
    _, result = advance(resource, [candidate()], observe(online=Verdict.REJECT, step=1), later(5))
    assert result.status.phase == Phase.CANARY


def _through_the_steps(resource, offered):
    for step in range(3):
        resource, result = advance(
            resource, offered, observe(online=Verdict.PROMOTE, step=step), later(31 * (step + 1))
        )
    return resource, result


def test_passing_the_last_step_promotes_once_the_weights_are_served() -> None:
    offered = [candidate()]
    resource, result = _through_the_steps(in_phase(Phase.CANARY), offered)
    assert (result.status.phase, result.status.canary_weight) == (Phase.PROMOTING, 100)
    assert result.status.last_decision.verdict == Verdict.PROMOTE
    assert result.status.last_decision.reason == "AllGatesPassed"
    assert [(d.gate, d.verdict) for d in result.status.record] == [
        (Gate.OFFLINE, Verdict.PROMOTE),
        *[(Gate.ONLINE, Verdict.PROMOTE)] * 4,  # three steps, then the final verdict
    ]
    assert result.status.champion.version == "v1"

    _, waiting = advance(resource, offered, observe(served={CHAMPION: 50, CANDIDATE: 50}), later(200))
    assert waiting.status.phase == Phase.PROMOTING
    assert actions_of(waiting, SetWeights) == [SetWeights({CHAMPION: 0, CANDIDATE: 100})]

    resource, done = advance(resource, offered, observe(served={CHAMPION: 0, CANDIDATE: 100}), later(200))
    status = done.status
    assert (status.phase, status.champion.version, status.candidate, status.canary_weight) == (
        Phase.PROMOTED,
        "v2",
        None,
        0,
    )
    assert [decision.verdict for decision in status.history] == [Verdict.PROMOTE]
    assert RemoveRevision(CHAMPION) in done.actions
    assert actions_of(done, UpdateCandidateStatus)[0].phase == Phase.PROMOTED
    assert [event.reason for event in actions_of(done, EmitEvent)] == ["Promoted"]

    _, again = advance(resource, offered, observe(healthy(CANDIDATE)), later(201))
    assert again.status.history == status.history and again.status.phase == Phase.PROMOTED


def test_rolling_back_completes_when_the_champion_has_all_traffic() -> None:
    resource = in_phase(Phase.CANARY)
    offered = [candidate()]
    resource, _ = advance(resource, offered, observe(online=Verdict.REJECT), later(5))
    _, waiting = advance(resource, offered, observe(served={CHAMPION: 90, CANDIDATE: 10}), later(6))
    assert waiting.status.phase == Phase.ROLLING_BACK
    _, done = advance(resource, offered, observe(served={CHAMPION: 100, CANDIDATE: 0}), later(6))
    assert (done.status.phase, done.status.champion.version, done.status.candidate) == (
        Phase.ROLLED_BACK,
        "v1",
        None,
    )
    assert done.status.history[0].verdict == Verdict.REJECT and RemoveRevision(CANDIDATE) in done.actions
    assert actions_of(done, UpdateCandidateStatus)[0].phase == Phase.ROLLED_BACK


def test_a_candidate_revision_that_fails_during_the_canary_is_rolled_back() -> None:
    resource = in_phase(Phase.CANARY)
    observations = observe(
        {**healthy(CHAMPION), **healthy(CANDIDATE, state=RevisionState.FAILED, message="crash")}
    )
    _, result = advance(resource, [candidate()], observations, later(5))
    assert (result.status.phase, result.status.last_decision.reason) == (Phase.ROLLING_BACK, "RevisionFailed")


def test_deleting_the_candidate_during_the_canary_rolls_back() -> None:
    resource = in_phase(Phase.CANARY)
    _, result = advance(resource, [], observe(), later(5))
    assert (result.status.phase, result.status.last_decision.reason) == (
        Phase.ROLLING_BACK,
        "CandidateWithdrawn",
    )


def test_deleting_the_candidate_while_benchmarking_ends_the_rollout() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    _, result = advance(resource, [], observe())
    assert (result.status.phase, result.status.candidate) == (Phase.ROLLED_BACK, None)
    assert actions_of(result, EmitEvent)[0].type == "Normal"


@pytest.mark.parametrize(
    ("steps", "step_before", "step_after", "weight"),
    [
        ([{"weight": 20}, {"weight": 60}, {"weight": 90}], 1, 1, 60),  # same count, new weights
        ([{"weight": 30}], 1, 0, 30),  # fewer steps than the current index: the last one
        ([{"weight": 5}, {"weight": 25}, {"weight": 50}, {"weight": 75}], 1, 1, 25),
    ],
)
def test_changing_the_steps_mid_canary_keeps_the_step_and_takes_its_new_weight(
    steps, step_before, step_after, weight
) -> None:
    offered = [candidate()]
    resource = in_phase(Phase.CANARY)
    resource, _ = advance(resource, offered, observe(online=Verdict.PROMOTE), later(31))
    assert resource.status.canary.step == step_before
    changed = deployment(resource.status, rollout={"steps": steps})
    changed.metadata.generation = 2
    _, result = advance(changed, offered, observe(), later(32))
    assert (result.status.canary.step, result.status.canary.steps, result.status.canary_weight) == (
        step_after,
        len(steps),
        weight,
    )
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100 - weight, CANDIDATE: weight})]
    assert result.status.observed_generation == 2
    assert all(condition.observed_generation == 2 for condition in result.status.conditions)


def test_switching_to_manual_mid_rollout_lets_the_running_rollout_finish() -> None:
    resource = in_phase(Phase.CANARY)
    manual = deployment(resource.status, replacement={"mode": "manual"})
    _, result = advance(manual, [candidate()], observe(online=Verdict.PROMOTE), later(31))
    assert (result.status.phase, result.status.canary.step) == (Phase.CANARY, 1)


def test_a_second_candidate_during_a_canary_queues_and_runs_against_the_new_champion() -> None:
    first, second = candidate("v2"), candidate("v3", created="2026-11-29T05:30:00Z")
    resource = in_phase(Phase.CANARY)
    resource, result = advance(resource, [first, second], observe(), later(1))
    queued = [
        update for update in actions_of(result, UpdateCandidateStatus) if update.candidate == "medical-v3"
    ]
    assert queued[0].phase == Phase.PENDING and queued[0].message == "queued behind v2"
    assert result.status.candidate.version == "v2"

    resource, _ = _through_the_steps(resource, [first, second])
    resource, result = advance(resource, [first, second], observe(), later(200))
    assert (result.status.phase, result.status.champion.version) == (Phase.PROMOTED, "v2")
    _, result = advance(resource, [first, second], observe(healthy(CANDIDATE)), later(201))
    assert (result.status.phase, result.status.candidate.version) == (Phase.BENCHMARKING, "v3")
    assert result.status.champion.revision == CANDIDATE


def test_changing_spec_model_mid_rollout_is_queued_as_an_offer() -> None:
    resource = in_phase(Phase.CANARY)
    v9 = {
        "version": "v9",
        "artifact": {"uri": "/m/v9.gguf", "digest": "sha256:" + "c" * 64, "quantization": "Q4_K_M"},
    }
    changed = deployment(resource.status, model=v9)
    resource, result = advance(changed, [candidate()], observe(online=Verdict.REJECT), later(5))
    assert result.status.phase == Phase.ROLLING_BACK and result.status.candidate.version == "v2"
    resource, _ = advance(resource, [candidate()], observe(), later(6))
    assert resource.status.phase == Phase.ROLLED_BACK
    _, result = advance(resource, [candidate()], observe(healthy(CHAMPION)), later(7))
    assert (result.status.phase, result.status.candidate.version, result.status.candidate.candidate) == (
        Phase.BENCHMARKING,
        "v9",
        None,
    )


def test_a_decided_version_is_never_offered_again() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    resource, _ = advance(resource, [candidate()], observe(offline=Verdict.REJECT))
    _, result = advance(resource, [candidate()], observe(healthy(CHAMPION)))
    assert (result.status.phase, result.status.candidate) == (Phase.REJECTED, None)


def test_candidate_status_is_repaired_from_the_deployment_history() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    resource, _ = advance(resource, [candidate()], observe(offline=Verdict.REJECT))
    stale = candidate(status={"phase": "Benchmarking", "message": "running"})
    _, result = advance(resource, [stale], observe(healthy(CHAMPION)))
    update = actions_of(result, UpdateCandidateStatus)
    assert (
        len(update) == 1
        and update[0].phase == Phase.REJECTED
        and update[0].decision.verdict == Verdict.REJECT
    )


def test_an_unchanged_world_gives_an_unchanged_status() -> None:
    resource = in_phase(Phase.CANARY)
    first = advance(resource, [candidate()], observe(), later(3))[1]
    second = advance(resource, [candidate()], observe(), later(4))[1]
    assert (
        first.status
        == second.status
        == resource.status.model_copy(update={"conditions": first.status.conditions})
    )
    assert first.status.conditions == resource.status.conditions


def test_condition_transition_time_changes_only_with_the_condition_status() -> None:
    resource, _ = advance(deployment(), [], observe({}), NOW)
    resource, _ = advance(resource, [], observe({}), later(60))
    assert {c.last_transition_time for c in resource.status.conditions} == {"2026-11-29T06:00:00.000Z"}
    resource, _ = advance(resource, [], observe(healthy(CHAMPION)), later(120))
    times = {c.type: c.last_transition_time for c in resource.status.conditions}
    assert times == {
        "Ready": "2026-11-29T06:02:00.000Z",
        "Progressing": "2026-11-29T06:00:00.000Z",
        "Degraded": "2026-11-29T06:00:00.000Z",
    }


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1.5s", 1.5)]
)
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "5 m", "1d", "s30"])
def test_parse_duration_refuses_garbage(text) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_revision_names_stay_dns_labels() -> None:
    assert revision_name("medical", "v2") == "medical-v2"
    long = revision_name("d" * 60, "v" * 60)
    assert len(long) == 63 and long != revision_name("d" * 60, "v" * 59 + "w")


# --- progress deadlines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate_state", "doing"),
    [(RevisionState.LOADING, "loading"), (RevisionState.READY, "benchmarking")],
)
def test_a_candidate_still_loading_or_benchmarking_past_the_deadline_fails(candidate_state, doing) -> None:
    resource = in_phase(Phase.BENCHMARKING, rollout={"progressDeadline": "2m"})
    observations = observe({**healthy(CHAMPION), **healthy(CANDIDATE, state=candidate_state)})
    _, waiting = advance(resource, [candidate()], observations, later(119))
    assert waiting.status.phase == Phase.BENCHMARKING and waiting.requeue_after == pytest.approx(1)
    _, result = advance(resource, [candidate()], observations, later(121))
    status = result.status
    assert (status.phase, status.champion.version, status.candidate) == (Phase.REJECTED, "v1", None)
    assert (status.history[0].reason, status.history[0].message) == (
        "ProgressDeadlineExceeded",
        f"still {doing} after 2m",
    )
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100})]  # the champion keeps serving
    assert RemoveRevision(CANDIDATE) in result.actions
    assert actions_of(result, UpdateCandidateStatus)[0].phase == Phase.FAILED


def test_a_champion_not_ready_by_the_deadline_is_failed_until_it_serves() -> None:
    resource, _ = advance(deployment(), [], observe({}))
    loading = observe(healthy(CHAMPION, state=RevisionState.LOADING))
    resource, result = advance(resource, [], loading, later(601))
    assert result.status.phase == Phase.FAILED
    assert [event.reason for event in actions_of(result, EmitEvent)] == ["ProgressDeadlineExceeded"]
    _, result = advance(resource, [], observe(healthy(CHAMPION)), later(700))
    assert result.status.phase == Phase.SERVING


def test_the_phase_start_is_kept_in_status() -> None:
    resource = in_phase(Phase.BENCHMARKING)
    assert resource.status.phase_since == format_time(NOW)
    _, result = advance(resource, [candidate()], observe(offline=Verdict.PROMOTE), later(5))
    assert (result.status.phase, result.status.phase_since) == (Phase.CANARY, format_time(later(5)))


# --- the decision record ------------------------------------------------------------------------


def _with_evidence(verdict: Verdict, gate: Gate, test: str) -> GateOutcome:
    evidence = Evidence(test=test, n_champion=100, n_candidate=100, effect=0.1, ci_low=0.05, ci_high=0.15)
    return GateOutcome(verdict, gate, f"{test}-passed", "with evidence", (evidence,))


def test_the_candidate_keeps_its_whole_record_and_the_history_a_summary() -> None:
    offered = [candidate()]
    resource = in_phase(Phase.BENCHMARKING)
    offline = OfflineResult(
        CANDIDATE, ("medical-qa",), _with_evidence(Verdict.PROMOTE, Gate.OFFLINE, "mcnemar-exact")
    )
    resource, _ = advance(
        resource, offered, Observations(revisions=healthy(CHAMPION, CANDIDATE), offline=offline)
    )
    for step in range(3):
        online = OnlineResult(
            CANDIDATE, step, 100, _with_evidence(Verdict.PROMOTE, Gate.ONLINE, "msprt"), later(200)
        )
        observations = Observations(revisions=healthy(CHAMPION, CANDIDATE), online=online)
        resource, _ = advance(resource, offered, observations, later(31 * (step + 1)))
    resource, done = advance(resource, offered, observe(), later(200))
    assert done.status.phase == Phase.PROMOTED
    (update,) = actions_of(done, UpdateCandidateStatus)
    assert [(d.gate, d.reason) for d in update.record] == [
        (Gate.OFFLINE, "mcnemar-exact-passed"),
        *[(Gate.ONLINE, "msprt-passed")] * 3,
        (Gate.ONLINE, "AllGatesPassed"),
    ]
    assert all(d.evidence for d in update.record)  # n, effect, interval of every step are kept
    assert "step 2/3 at 50%" in update.record[2].message
    assert update.decision == update.record[-1] and update.decision.evidence
    assert done.status.history[0].evidence == [] and done.status.history[0].reason == "AllGatesPassed"
    shown = candidate(
        status={
            "phase": "Promoted",
            "message": update.message,
            "decision": update.decision.to_wire(),
            "record": [d.to_wire() for d in update.record],
        }
    )
    _, again = advance(resource, [shown], observe(healthy(CANDIDATE)), later(201))
    assert not actions_of(again, UpdateCandidateStatus)  # level-triggered: nothing left to write
    # Once the next rollout began, the deployment holds the record no more: the candidate keeps it,
    # its decision keeps the evidence, and no second Event repeats the decision.
    offered = [shown, candidate("v3", created="2026-11-29T05:30:00Z")]
    for moment in (202, 203, 204):
        resource, result = advance(resource, offered, observe(healthy(CANDIDATE)), later(moment))
        assert not [u for u in actions_of(result, UpdateCandidateStatus) if u.candidate == "medical-v2"]
    assert resource.status.candidate.version == "v3" and resource.status.record == []


def test_a_record_lost_in_a_crash_reaches_the_candidate_even_after_the_next_rollout_began() -> None:
    first, second = candidate("v2"), candidate("v3", created="2026-11-29T05:30:00Z")
    resource = in_phase(Phase.BENCHMARKING)
    resource, _ = advance(resource, [first, second], observe(offline=Verdict.REJECT))
    assert resource.status.record[-1].verdict == Verdict.REJECT
    # The shell crashed before writing medical-v2's status; the next reconcile starts v3 at once.
    _, result = advance(resource, [first, second], observe(healthy(CHAMPION)))
    assert result.status.candidate.version == "v3" and result.status.record == []
    (update,) = [u for u in actions_of(result, UpdateCandidateStatus) if u.candidate == "medical-v2"]
    assert update.phase == Phase.REJECTED and [d.verdict for d in update.record] == [Verdict.REJECT]


# --- the bake after a promotion -----------------------------------------------------------------


def _baking(bake_time: str = "60s"):
    """A deployment driven through a passing canary and a served promotion into its bake."""
    offered = [candidate()]
    rollout = deployment_doc()["spec"]["rollout"] | {"bakeTime": bake_time}
    resource, _ = _through_the_steps(in_phase(Phase.CANARY, rollout=rollout), offered)
    resource, result = advance(resource, offered, observe(served={CHAMPION: 0, CANDIDATE: 100}), later(200))
    return resource, result


def _bake_sample(verdict: Verdict, read_at) -> Observations:
    # During the bake the new champion is the "candidate" arm and the previous one the "champion" arm.
    online = OnlineResult(CANDIDATE, 3, 100, _with_evidence(verdict, Gate.ONLINE, "msprt"), read_at)
    return Observations(revisions=healthy(CHAMPION, CANDIDATE), online=online)


def test_after_a_promotion_the_previous_champion_stays_loaded_and_mirrored_for_the_bake() -> None:
    resource, result = _baking()
    status = result.status
    assert (status.phase, status.champion.version, status.previous.version) == (Phase.BAKING, "v2", "v1")
    assert actions_of(result, SetWeights) == [SetWeights({CANDIDATE: 100, CHAMPION: 0}, shadow=CHAMPION)]
    assert not actions_of(result, RemoveRevision)
    assert [d.verdict for d in status.history] == [Verdict.PROMOTE]
    assert actions_of(result, UpdateCandidateStatus)[0].phase == Phase.BAKING
    _, watching = advance(resource, [candidate()], observe(), later(210))
    since = resource.status.phase_since
    until = format_time(parse_time(since) + timedelta(seconds=60))
    assert actions_of(watching, ObserveCanary) == [
        ObserveCanary(CHAMPION, CANDIDATE, 3, since, until, CHAMPION)
    ]


def test_a_regression_during_the_bake_rolls_back_to_the_previous_champion() -> None:
    offered = [candidate()]
    resource, _ = _baking()
    resource, result = advance(resource, offered, _bake_sample(Verdict.REJECT, later(210)), later(210))
    status = result.status
    assert (status.phase, status.champion.version, status.candidate.version) == (
        Phase.ROLLING_BACK,
        "v1",
        "v2",
    )
    assert actions_of(result, SetWeights) == [SetWeights({CHAMPION: 100, CANDIDATE: 0})]
    resource, done = advance(resource, offered, observe(served={CHAMPION: 100, CANDIDATE: 0}), later(211))
    status = done.status
    assert (status.phase, status.champion.version, status.candidate, status.previous) == (
        Phase.ROLLED_BACK,
        "v1",
        None,
        None,
    )
    assert [d.verdict for d in status.history] == [Verdict.REJECT, Verdict.PROMOTE]
    assert RemoveRevision(CANDIDATE) in done.actions
    (event,) = actions_of(done, EmitEvent)
    assert (event.type, event.reason) == ("Warning", "RolledBack")
    assert event.message.endswith("; v1 serves again"), "the champion changed back: not 'unchanged'"
    assert actions_of(done, UpdateCandidateStatus)[0].phase == Phase.ROLLED_BACK
    _, later_on = advance(resource, offered, observe(healthy(CHAMPION)), later(300))
    assert later_on.status.candidate is None  # a version rolled back after its bake is not offered again


def test_a_bake_without_a_regression_removes_the_previous_champion() -> None:
    offered = [candidate()]
    resource, _ = _baking()
    resource, result = advance(resource, offered, _bake_sample(Verdict.PROMOTE, later(205)), later(205))
    assert result.status.phase == Phase.BAKING  # the bake time is a minimum
    bake_ends = parse_time(resource.status.phase_since) + timedelta(seconds=60)
    _, done = advance(resource, offered, _bake_sample(Verdict.PROMOTE, bake_ends), bake_ends)
    assert (done.status.phase, done.status.champion.version, done.status.previous) == (
        Phase.PROMOTED,
        "v2",
        None,
    )
    assert RemoveRevision(CHAMPION) in done.actions
    assert done.status.record[-1].reason == "BakePassed"
    assert [event.type for event in actions_of(done, EmitEvent)] == ["Normal"]


def test_a_bake_that_could_not_compare_keeps_the_promotion_and_says_so() -> None:
    offered = [candidate()]
    resource, _ = _baking()
    overdue = parse_time(resource.status.phase_since) + timedelta(seconds=60 + 601)
    _, done = advance(resource, offered, observe(), overdue)
    assert (done.status.phase, done.status.champion.version) == (Phase.PROMOTED, "v2")
    assert done.status.record[-1].reason == "BakeUnobserved"
    assert [(event.type, event.reason) for event in actions_of(done, EmitEvent)] == [
        ("Warning", "BakeUnobserved")
    ]


def test_the_renderer_serves_the_bake_split() -> None:
    resource, _ = _baking()
    pool = ModelPool.model_validate(
        {
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": "cpu-small"},
            "spec": {},
        }
    )
    (spec,) = render_pool(pool, [resource]).config.deployments
    assert [revision.name for revision in spec.revisions] == [CANDIDATE, CHAMPION]
    assert (spec.route.weights, spec.route.shadow) == ({CANDIDATE: 100.0, CHAMPION: 0.0}, CHAMPION)
