"""Crash safety by construction: a shell that dies anywhere converges to the same outcome from status alone.

A small simulated world plays the shell's part (a data plane, benchmark and canary results); at
random ticks the "operator" crashes before persisting status, after persisting it, or halfway
through the actions, and loses everything it held in memory. Whatever the crash pattern, the
better candidate is promoted exactly once, the worse one is rolled back, and nothing is left over.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from baton.api import ModelCandidate, ModelDeployment, ModelDeploymentStatus, Phase, Verdict
from baton.api.candidate import ModelCandidateStatus
from baton.api.decision import Gate
from baton.rollout import (
    DeployRevision,
    Observations,
    ObserveCanary,
    OfflineResult,
    OnlineResult,
    RemoveRevision,
    RevisionHealth,
    RevisionState,
    RunBenchmark,
    SetWeights,
    UpdateCandidateStatus,
    reconcile,
)
from tests.unit.rollout.helpers import NOW, candidate, deployment, later, outcome

pytestmark = pytest.mark.unit

VERDICTS = {"medical-v2": Verdict.PROMOTE, "medical-v3": Verdict.REJECT}


@dataclass
class World:
    """What survives an operator crash: the data plane and the stored resources."""

    deployment: ModelDeployment
    candidates: dict[str, ModelCandidate]
    running: dict[str, int] = field(default_factory=dict)  # revision -> ticks since deployed
    weights: dict[str, int] = field(default_factory=dict)
    # In operator memory: lost on every crash.
    offline: OfflineResult | None = None
    online: OnlineResult | None = None
    now: datetime = NOW

    def observations(self) -> Observations:
        health = {
            revision: RevisionHealth(RevisionState.READY if age >= 1 else RevisionState.LOADING)
            for revision, age in self.running.items()
        }
        return Observations(health, dict(self.weights), self.offline, self.online)

    def carry_out(self, action: object) -> None:
        match action:
            case DeployRevision(revision=revision):
                self.running.setdefault(revision.revision, 0)
            case RemoveRevision(revision=revision):
                self.running.pop(revision, None)
                self.weights.pop(revision, None)
            case SetWeights(weights=weights):
                self.weights = dict(weights)
            case RunBenchmark(candidate=revision, benchmarks=benchmarks):
                self.offline = OfflineResult(revision, benchmarks, outcome(Verdict.PROMOTE))
            case ObserveCanary(candidate=revision, step=step):
                verdict = outcome(VERDICTS[revision], Gate.ONLINE)
                self.online = OnlineResult(revision, step, 100, verdict, self.now)
            case UpdateCandidateStatus(candidate=name, phase=phase, message=message, decision=decision):
                status = ModelCandidateStatus(phase=phase, message=message, decision=decision)
                status = ModelCandidateStatus.model_validate(status.to_wire())
                self.candidates[name] = self.candidates[name].model_copy(update={"status": status})

    def crash(self) -> None:
        self.offline = self.online = None


@pytest.mark.parametrize("seed", range(20))
def test_random_crashes_converge_without_double_promotion(seed: int) -> None:
    rng = random.Random(seed)
    world = World(
        deployment(),
        {"medical-v2": candidate("v2"), "medical-v3": candidate("v3", created="2026-11-29T05:30:00Z")},
    )
    for tick in range(400):
        now = world.now = later(tick * 7)
        for revision in world.running:
            world.running[revision] += 1
        result = reconcile(world.deployment, list(world.candidates.values()), world.observations(), now)
        crash = rng.random() < 0.3
        where = rng.choice(["before-status", "after-status", "mid-actions"]) if crash else None
        if where == "before-status":
            world.crash()
            continue
        stored = ModelDeploymentStatus.model_validate(result.status.to_wire())
        world.deployment = world.deployment.model_copy(update={"status": stored})
        promotions = Counter(d.candidate for d in result.status.history if d.verdict == Verdict.PROMOTE)
        assert all(count == 1 for count in promotions.values()), result.status.history
        actions = list(result.actions)
        if where == "mid-actions":
            actions = actions[: rng.randrange(len(actions) + 1)]
        elif where == "after-status":
            actions = []
        for action in actions:
            world.carry_out(action)
        if crash:
            world.crash()
        if _settled(world):
            break
    status = world.deployment.status
    assert _settled(world), status
    assert status.champion.version == "v2"
    assert [(d.candidate, d.verdict) for d in status.history] == [
        ("v3", Verdict.REJECT),
        ("v2", Verdict.PROMOTE),
    ]
    assert world.weights == {"medical-v2": 100}
    assert set(world.running) == {"medical-v2"}
    assert world.candidates["medical-v2"].status.phase == Phase.PROMOTED
    assert world.candidates["medical-v3"].status.phase == Phase.ROLLED_BACK


def _settled(world: World) -> bool:
    status = world.deployment.status
    phases = {name: c.status.phase if c.status else None for name, c in world.candidates.items()}
    return (
        status is not None
        and status.phase == Phase.ROLLED_BACK
        and phases == {"medical-v2": Phase.PROMOTED, "medical-v3": Phase.ROLLED_BACK}
        and set(world.running) == {"medical-v2"}
    )
