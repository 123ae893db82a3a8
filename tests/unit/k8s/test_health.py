"""The operator's probe decision (`baton.k8s.health.assess`): pure, on monotonic times given."""

from __future__ import annotations

import pytest

from baton.k8s.health import Pulse, Role, Thresholds, assess

pytestmark = pytest.mark.unit

LIMITS = Thresholds(loop_s=10.0, work_s=300.0)


@pytest.mark.parametrize("readiness", [False, True], ids=["livez", "readyz"])
def test_a_standby_is_live_and_ready_however_long_it_waits(readiness: bool) -> None:
    verdict = assess(Pulse(Role.STANDBY, stamp=0.0), 10_000.0, LIMITS, readiness=readiness)
    assert verdict.ok and verdict.reason.startswith("standby")


@pytest.mark.parametrize("readiness", [False, True], ids=["livez", "readyz"])
def test_a_leader_whose_loop_stopped_beating_fails_after_the_threshold(readiness: bool) -> None:
    pulse = Pulse(Role.LEADING, stamp=100.0)
    assert assess(pulse, 110.0, LIMITS, readiness=readiness).ok  # at the threshold: still fine
    verdict = assess(pulse, 110.5, LIMITS, readiness=readiness)
    assert not verdict.ok
    assert verdict.reason == "the control loop has not run for 10.5 s (threshold 10 s)"


def test_a_stuck_reconcile_turns_the_leader_unready_but_not_dead() -> None:
    pulse = Pulse(Role.LEADING, stamp=1000.0, oldest_work_started=1000.0 - 301.0)
    ready = assess(pulse, 1000.5, LIMITS, readiness=True)
    assert not ready.ok and ready.reason == "a reconcile has run for 302 s (threshold 300 s)"
    assert assess(pulse, 1000.5, LIMITS, readiness=False).ok


def test_a_beating_leader_with_short_reconciles_is_ready() -> None:
    pulse = Pulse(Role.LEADING, stamp=50.0, oldest_work_started=49.0)
    verdict = assess(pulse, 51.0, LIMITS, readiness=True)
    assert verdict.ok and verdict.reason == "leading: the control loop ran 1.0 s ago"


def test_a_stale_loop_is_reported_before_a_stuck_reconcile() -> None:
    pulse = Pulse(Role.LEADING, stamp=0.0, oldest_work_started=-1000.0)
    assert "control loop" in assess(pulse, 20.0, LIMITS, readiness=True).reason
